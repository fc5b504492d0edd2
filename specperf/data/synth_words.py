"""The word lists the synthetic PubMedQA-shaped set (:mod:`specperf.data.synth`) fills its sentence templates with.

Hand-written, generic clinical vocabulary: nothing here comes from PubMed or PubMedQA.
"""

INTERVENTIONS = (
    "metformin", "early mobilization", "statin therapy", "vitamin D supplementation",
    "low-dose aspirin", "intravenous iron", "tranexamic acid", "dexamethasone",
    "prophylactic antibiotics", "cognitive behavioural therapy", "structured exercise training",
    "telemonitoring", "nurse-led follow-up", "bariatric surgery", "laparoscopic repair",
    "regional anaesthesia", "epidural analgesia", "continuous glucose monitoring",
    "SGLT2 inhibitors", "beta-blockers", "ACE inhibitors", "proton pump inhibitors",
    "probiotic supplementation", "omega-3 fatty acids", "melatonin", "ketamine",
    "magnesium sulfate", "compression stockings", "enoxaparin", "early enteral nutrition",
    "high-flow nasal oxygen", "noninvasive ventilation", "prone positioning",
    "restrictive transfusion", "goal-directed fluid therapy", "preoperative carbohydrate loading",
    "smoking cessation counselling", "pulmonary rehabilitation", "cardiac rehabilitation",
    "home-based physiotherapy", "mindfulness training", "acupuncture", "corticosteroid injection",
    "hyaluronic acid injection", "platelet-rich plasma", "robotic-assisted surgery",
    "minimally invasive surgery", "delayed cord clamping", "kangaroo care",
    "antenatal corticosteroids", "folic acid supplementation", "zinc supplementation",
    "oral rehydration therapy", "hand hygiene education", "chlorhexidine bathing",
    "antibiotic stewardship", "pharmacist-led medication review", "text message reminders",
    "influenza vaccination", "remote ischaemic preconditioning",
)

OUTCOMES = (
    "postoperative delirium", "30-day mortality", "hospital readmission", "length of hospital stay",
    "surgical site infection", "venous thromboembolism", "major bleeding", "acute kidney injury",
    "myocardial infarction", "stroke recurrence", "all-cause mortality", "falls", "hip fracture",
    "depressive symptoms", "chronic pain", "opioid consumption", "HbA1c levels",
    "systolic blood pressure", "LDL cholesterol", "hospital-acquired pneumonia",
    "ventilator-associated pneumonia", "catheter-related bloodstream infection",
    "intensive care admission", "time to recovery", "functional decline", "cognitive decline",
    "preterm birth", "neonatal sepsis", "low birth weight", "post-traumatic stress symptoms",
    "anxiety scores", "fatigue", "emergency department visits", "wound dehiscence",
    "anastomotic leak", "atrial fibrillation", "heart failure hospitalization",
    "dialysis dependence", "liver enzyme elevation", "relapse", "treatment failure",
    "antibiotic resistance", "Clostridioides difficile infection", "pressure ulcers",
    "malnutrition", "weight gain", "sleep disturbance", "medication errors",
    "disability at 90 days", "tumour recurrence",
)

CONDITIONS = (
    "type 2 diabetes", "heart failure", "chronic obstructive pulmonary disease", "hip fracture",
    "sepsis", "acute stroke", "atrial fibrillation", "chronic kidney disease",
    "rheumatoid arthritis", "knee osteoarthritis", "major depression", "dementia",
    "Parkinson's disease", "multiple sclerosis", "asthma", "community-acquired pneumonia",
    "colorectal cancer", "breast cancer", "prostate cancer", "non-small cell lung cancer",
    "hepatocellular carcinoma", "liver cirrhosis", "Crohn's disease", "ulcerative colitis",
    "acute pancreatitis", "obesity", "hypertension", "coronary artery disease",
    "peripheral artery disease", "traumatic brain injury", "spinal cord injury", "severe burns",
    "HIV infection", "tuberculosis", "chronic hepatitis C", "COVID-19", "gestational diabetes",
    "preeclampsia", "polycystic ovary syndrome", "osteoporosis", "chronic low back pain",
    "migraine", "epilepsy", "schizophrenia", "bipolar disorder", "alcohol use disorder",
    "opioid use disorder", "anorexia nervosa", "sickle cell disease", "iron deficiency anaemia",
    "psoriasis", "atopic dermatitis", "glaucoma", "cataract", "acute myeloid leukaemia",
    "lymphoma", "cystic fibrosis", "bronchiolitis", "acute appendicitis", "cholecystitis",
)

POPULATIONS = (
    "adults", "older adults", "elderly patients", "children", "adolescents", "pregnant women",
    "postmenopausal women", "men", "veterans", "nursing home residents", "intensive care patients",
    "surgical patients", "outpatients", "inpatients", "primary care patients",
    "emergency department patients", "transplant recipients", "cardiac surgery patients",
    "orthopaedic patients", "oncology patients", "haemodialysis patients", "current smokers",
    "obese adults", "preterm infants", "neonates", "school-aged children",
    "community-dwelling older adults", "frail older adults", "low-income adults", "rural patients",
    "health care workers", "athletes", "patients over 65 years", "multimorbid patients",
    "first-time mothers", "young adults", "middle-aged adults", "military personnel", "refugees",
    "hospitalized patients",
)

DESIGNS = (
    "randomized controlled trial", "double-blind randomized trial", "cluster randomized trial",
    "pragmatic randomized trial", "prospective cohort study", "retrospective cohort study",
    "population-based cohort study", "case-control study", "nested case-control study",
    "cross-sectional study", "multicentre observational study",
    "single-centre retrospective review",
    "propensity-matched analysis", "secondary analysis of a randomized trial",
    "registry-based study", "pilot randomized trial", "quasi-experimental study",
    "before-and-after study", "interrupted time series analysis", "crossover trial",
    "non-inferiority trial", "prospective observational study", "matched cohort study",
    "retrospective chart review", "national database study", "longitudinal cohort study",
    "stepped-wedge trial", "open-label randomized trial", "multicentre cohort study",
    "post hoc analysis of a cohort study",
)

COUNTRIES = (
    "Denmark", "Sweden", "Norway", "Finland", "the Netherlands", "Germany", "France", "Spain",
    "Italy", "the United Kingdom", "Ireland", "Canada", "the United States", "Australia",
    "New Zealand", "Japan", "South Korea", "China", "Taiwan", "Singapore", "India", "Brazil",
    "Mexico", "Chile", "South Africa", "Kenya", "Nigeria", "Egypt", "Turkey", "Iran", "Israel",
    "Switzerland", "Austria", "Belgium", "Poland", "Portugal", "Greece", "Thailand", "Vietnam",
    "Argentina",
)

SETTINGS = (
    "university hospitals", "community hospitals", "primary care practices",
    "intensive care units", "outpatient clinics", "trauma centres", "nursing homes",
    "cancer centres", "maternity units", "rehabilitation centres", "teaching hospitals",
    "district hospitals",
)

COMPARATORS = (
    "usual care", "placebo", "standard care", "no intervention", "conventional treatment",
    "a sham procedure", "delayed treatment", "routine follow-up", "standard of care",
    "an attention control", "best supportive care", "a waiting list",
)

COVARIATES = (
    "age, sex and comorbidity", "baseline severity", "age, body mass index and smoking status",
    "socioeconomic status", "the Charlson comorbidity index", "frailty", "baseline risk",
    "age and sex", "study centre", "disease duration", "renal function", "prior hospitalization",
)

TIMEPOINTS = (
    "30 days", "90 days", "6 months", "12 months", "2 years", "hospital discharge", "5 years",
    "3 months", "day 28", "1 year",
)
