"""The embedded offline default: a synthetic PubMedQA-shaped data set and a self-trained GPT-2 family."""
