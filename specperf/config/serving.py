"""The ``serving:`` mapping: servers, load levels and SLOs of ``engine: server`` drafts (serving mode).

Torch-free and server-free: the keys are checked here at configure time; whether a server starts, answers, and
serves the named model is checked when the first server case runs.
"""

from __future__ import annotations

from urllib.parse import urlparse

from specperf.config.checks import (
    At,
    as_list,
    check_choice,
    check_float,
    check_int,
    check_int_tuple,
    check_mapping,
    check_str,
)
from specperf.config.schema import (
    MAX_CONCURRENCY,
    MAX_REQUESTS,
    MAX_ROUNDS,
    MAX_SEED,
    SERVER_KINDS,
    SERVING_DEFAULTS,
    SERVING_KEYS,
    SLO_KEYS,
    ServingSpec,
    SloSpec,
)
from specperf.errors import ConfigError

MAX_PORT = 65535
MAX_TIMEOUT_S = 24 * 3600.0


def _url(value: object, at: At) -> str:
    text = check_str(value, at, "http://127.0.0.1:8000")
    parsed = urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise at.error(value, "an http(s) base URL with a host", "write e.g. http://127.0.0.1:8000 (no /v1 path)")
    return text.rstrip("/")


def _optional_url(value: object, at: At) -> str | None:
    return None if value is None else _url(value, at)


def _rates(value: object, at: At) -> tuple[float, ...]:
    if value is None:
        return ()
    rates: list[float] = []
    for i, item in enumerate(as_list(value)):
        item_at = at.index(i) if isinstance(value, (list, tuple)) else at
        if item in ("inf", float("inf")):
            rate = float("inf")
        else:
            rate = check_float(item, item_at, 0.0, None, open_bounds=True)
        if rate in rates:
            raise item_at.error(item, "distinct values", f"remove the duplicate {item}")
        rates.append(rate)
    return tuple(rates)


def _slo(value: object, at: At) -> SloSpec:
    data = check_mapping(value, at, SLO_KEYS)
    picked = {key: check_float(item, at.key(key), 0.0, None, open_bounds=True)
              for key, item in data.items() if item is not None}
    return SloSpec(**picked)


def _strings(value: object, at: At, example: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise at.error(value, "a list of strings", f"write e.g. {example}")
    return tuple(check_str(item, at.index(i), example) for i, item in enumerate(value))


def _env(value: object, at: At) -> tuple[tuple[str, str], ...]:
    data = check_mapping(value, at, ()) if value is None else value
    if not isinstance(data, dict):
        raise at.error(value, "a mapping of environment variables", "write e.g. {VLLM_CPU_KVCACHE_SPACE: '1'}")
    out: list[tuple[str, str]] = []
    for key, item in data.items():
        if not isinstance(key, str) or not key:
            raise at.error(key, "variable names as strings", "quote the name")
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise at.key(key).error(item, "a string or number", f"write {key}: '1'")
        out.append((key, str(item)))
    return tuple(sorted(out))


def parse_serving(value: object, at: At) -> ServingSpec:
    """A ``serving:`` mapping; every key optional, unknown keys refused with the closest valid one."""
    data = check_mapping(value, at, SERVING_KEYS)
    unset = SERVING_DEFAULTS
    port = data.get("port")
    spec = ServingSpec(
        url=_optional_url(data.get("url"), at.key("url")),
        baseline_url=_optional_url(data.get("baseline_url"), at.key("baseline_url")),
        kind=check_choice(data.get("kind", unset["kind"]), at.key("kind"), SERVER_KINDS),
        model_name=None if data.get("model_name") is None else check_str(
            data["model_name"], at.key("model_name"), "model_name: my-model"),
        concurrency=() if data.get("concurrency", ...) is None else check_int_tuple(
            data.get("concurrency", unset["concurrency"]), at.key("concurrency"), 1, MAX_CONCURRENCY,
            "concurrency: [1, 4, 16]"),
        request_rate=_rates(data.get("request_rate"), at.key("request_rate")),
        burstiness=check_float(data.get("burstiness", unset["burstiness"]), at.key("burstiness"), 0.0, None,
                               open_bounds=True),
        requests=check_int(data.get("requests", unset["requests"]), at.key("requests"), 1, MAX_REQUESTS),
        warmup_requests=check_int(data.get("warmup_requests", unset["warmup_requests"]), at.key("warmup_requests"),
                                  0, MAX_REQUESTS),
        rounds=check_int(data.get("rounds", unset["rounds"]), at.key("rounds"), 1, MAX_ROUNDS),
        seed=check_int(data.get("seed", unset["seed"]), at.key("seed"), 0, MAX_SEED),
        slo=_slo(data.get("slo"), at.key("slo")),
        host=check_str(data.get("host", unset["host"]), at.key("host"), "host: 127.0.0.1"),
        port=None if port is None else check_int(port, at.key("port"), 1, MAX_PORT - 1),
        startup_timeout_s=check_float(data.get("startup_timeout_s", unset["startup_timeout_s"]),
                                      at.key("startup_timeout_s"), 0.0, MAX_TIMEOUT_S, open_bounds=True),
        request_timeout_s=check_float(data.get("request_timeout_s", unset["request_timeout_s"]),
                                      at.key("request_timeout_s"), 0.0, MAX_TIMEOUT_S, open_bounds=True),
        server_args=_strings(data.get("server_args"), at.key("server_args"), "server_args: ['--max-num-seqs', '16']"),
        env=_env(data.get("env"), at.key("env")),
    )
    _check_serving(spec, data, at)
    return spec


def _check_serving(spec: ServingSpec, data: dict[str, object], at: At) -> None:
    """Cross-key rules: attaching needs both URLs; at least one load level."""
    if (spec.url is None) != (spec.baseline_url is None):
        missing = "baseline_url" if spec.baseline_url is None else "url"
        raise ConfigError(f"missing key {missing!r} in {at.where} of {at.source}: attaching needs the speculative "
                          "server (url) and its non-speculative twin (baseline_url); fix: set both, or neither "
                          "(specperf then starts vLLM itself)")
    if spec.url is not None and spec.url == spec.baseline_url:
        raise at.key("baseline_url").error(data["baseline_url"], "a server other than url",
                                           "point it at the twin started without speculation")
    if not spec.loads:
        raise at.key("concurrency").error(data.get("concurrency"), "at least one load level",
                                          "set concurrency: [1, 4] or request_rate: [1.0, 4.0]")
    if spec.kind != "vllm" and spec.url is None:
        raise at.key("kind").error(spec.kind, "kind vllm when specperf starts the servers",
                                   f"start the {spec.kind} servers yourself and set url and baseline_url")
