"""A node's effective configuration: every knob, its value, and where the value came from.

Values are resolved in this order, each overriding the one before:

1. the defaults (:class:`~yzcore.protocol.config.EngineConfig` and the
   runtime's own);
2. a profile (``--profile``): ``default`` changes nothing; ``minimal`` is the
   smallest known-good configuration (B8.3): no transfer metrics, no rate
   limiter, fixed maintenance intervals, the least connections a healthy node
   needs. A test forms a network with it on every CI run;
3. the environment: ``YZ_METRICS=0``;
4. the command line's own flags (``--probe-interval`` …);
5. ``--set KEY=VALUE``, for any knob, e.g. to restore the maintenance
   intervals of an earlier release when rolling back (B8.2).

``--rollback N`` starts from attempt N's recorded values in place of a
profile (:mod:`yzcore.history`, B8.4).

``yz config show`` prints the result; a node's ``/status`` reports its
profile and every value that is not a default.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from yzcore.exceptions import InvalidConfig
from yzcore.protocol.config import EngineConfig

__all__ = ["PROFILES", "RUNTIME_DEFAULTS", "Setting", "engine_config", "overrides", "resolve", "table"]

#: The runtime's knobs beside the engine's, with their defaults.
RUNTIME_DEFAULTS: dict[str, Any] = {
    "probe_interval": 30.0,
    "heartbeat_interval": 5.0,
    "backoff_base": 0.5,
    "backoff_cap": 8.0,
    "start_jitter": 10.0,
    "metrics": True,
}

#: Named sets of overrides.
PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "minimal": {
        "metrics": False,  # no hook on any message path (B8.1)
        "rate_limit": False,  # nothing refuses discovery (the original network's limiter did)
        "maintenance_interval_settled": 1.0,  # fixed, as before the intervals adapted
        "conn_target": 3,  # the least a healthy node needs (ARCHITECTURE 4)
    },
}


@dataclass(frozen=True, slots=True)
class Setting:
    """One knob: its value and where it came from ("default", "profile minimal", ...)."""

    value: Any
    source: str


def _defaults() -> dict[str, Any]:
    out = {f.name: f.default for f in dataclasses.fields(EngineConfig)}
    out.update(RUNTIME_DEFAULTS)
    return out


def _parse(key: str, text: str, like: Any) -> Any:
    try:
        if isinstance(like, bool):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if isinstance(like, int):
            return int(text)
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(text)
        return value
    except ValueError:
        kind = "true or false" if isinstance(like, bool) else type(like).__name__
        raise InvalidConfig(f"{key}={text!r} is not {kind}.") from None


def resolve(profile: str = "default", *, flags: Mapping[str, Any] | None = None,
            sets: Iterable[str] = (), environ: Mapping[str, str] | None = None,
            role: str = "node", rollback: tuple[str, Mapping[str, Any]] | None = None
            ) -> dict[str, Setting]:
    """The effective configuration.

    Args:
        profile: A name of :data:`PROFILES`.
        flags: Values given by the command line's own options (``None``: not given),
            keyed by knob name, e.g. ``{"probe_interval": 5.0}``.
        sets: ``KEY=VALUE`` strings (``--set``).
        environ: The environment (default ``os.environ``).
        role: ``"bridge"`` changes one default: a bridge starts without jitter
            (a restarted bridge registers at once, A5.4).
        rollback: ``(source, values)``: an earlier attempt's values (``--rollback``),
            in place of a profile; the environment, flags and ``--set`` still apply.

    Raises:
        InvalidConfig: an unknown profile or key, or a value of the wrong type.
    """
    if profile not in PROFILES:
        raise InvalidConfig(f"no profile {profile!r}; choose one of {', '.join(PROFILES)}.")
    defaults = _defaults()
    out = {k: Setting(v, "default") for k, v in defaults.items()}
    if role == "bridge":
        out["start_jitter"] = Setting(0.0, "default for a bridge")
    for key, value in PROFILES[profile].items():
        out[key] = Setting(value, f"profile {profile}")
    if rollback is not None:
        source, values = rollback
        if profile != "default":
            raise InvalidConfig(f"--profile {profile} and --rollback both say where to start "
                                "from.", advice="Give one of them.")
        unknown = sorted(set(values) - set(defaults))
        if unknown:
            raise InvalidConfig(f"{source} set {', '.join(unknown)}, which this release does "
                                "not have.", advice="Run the release that attempt recorded "
                                "(`yz config history --json` names it).")
        for key, value in values.items():  # knobs newer than the attempt keep their defaults
            if not _same_kind(value, defaults[key]):
                raise InvalidConfig(f"{source}: {key}={value!r} is not "
                                    f"{type(defaults[key]).__name__}.", advice=_HISTORY_ADVICE)
            out[key] = Setting(value, source)
    env = os.environ if environ is None else environ
    if "YZ_METRICS" in env:
        out["metrics"] = Setting(env["YZ_METRICS"].strip().lower() not in ("0", "false", "no", "off"),
                                 "YZ_METRICS")
    for key, value in (flags or {}).items():
        if value is not None:
            flag = "--no-metrics" if key == "metrics" else "--" + key.replace("_", "-")
            out[key] = Setting(value, flag)
    for item in sets:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in defaults:
            raise InvalidConfig(f"--set {item!r}: expected KEY=VALUE with KEY one of "
                                f"{', '.join(sorted(defaults))}.")
        out[key] = Setting(_parse(key, text.strip(), defaults[key]), "--set")
    engine_config(out)  # every engine value checked here, not when the node starts
    bad = [k for k in ("probe_interval", "heartbeat_interval", "backoff_base", "backoff_cap")
           if not 0 < out[k].value < math.inf]
    if bad or not 0 <= out["start_jitter"].value < math.inf:  # nan fails both
        raise InvalidConfig(f"{', '.join(bad) or 'start_jitter'} must be a finite number "
                            f"{'> 0' if bad else '>= 0'}.")
    return out


_MAY_BE_ZERO = frozenset({"join_refresh_below"})  # 0: a join refreshes no bucket
_HISTORY_ADVICE = ("The history was edited or written by another program: roll back to another "
                   "attempt.")


def _same_kind(value: Any, like: Any) -> bool:
    """Whether a recorded ``value`` can stand for a knob whose default is ``like``."""
    if isinstance(like, bool) or isinstance(value, bool):
        return isinstance(like, bool) and isinstance(value, bool)
    if isinstance(like, int):
        return isinstance(value, int)
    return isinstance(value, (int, float)) and math.isfinite(value)


def engine_config(settings: Mapping[str, Setting]) -> EngineConfig:
    """The engine's part of ``settings``."""
    values = {f.name: settings[f.name].value for f in dataclasses.fields(EngineConfig)}
    bad = [k for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
           and v <= 0 and k not in _MAY_BE_ZERO]
    if bad:
        raise InvalidConfig(f"{', '.join(bad)} must be positive.")
    negative = [k for k in sorted(_MAY_BE_ZERO) if values[k] < 0]
    if negative:
        raise InvalidConfig(f"{', '.join(negative)} must be 0 or more.")
    if values["conn_target"] > values["conn_max"] or values["conn_max"] > values["conn_cap"]:
        raise InvalidConfig("conn_target <= conn_max <= conn_cap must hold.")
    return EngineConfig(**values)


def overrides(settings: Mapping[str, Setting]) -> dict[str, dict[str, Any]]:
    """The values that are not plain defaults, with their sources (for ``/status``)."""
    return {k: {"value": s.value, "source": s.source} for k, s in sorted(settings.items())
            if not s.source.startswith("default")}


def table(settings: Mapping[str, Setting]) -> str:
    """``yz config show``: one knob a line, its value and where it came from."""
    width = max(len(k) for k in settings)
    return "\n".join(f"{k:<{width}}  {s.value!s:<10}  {s.source}" for k, s in sorted(settings.items()))

