"""Estimator names to estimator objects, above both ``wavefront.sim`` and ``wavefront.estimators``.

The simulator knows the classical estimators; learned ones come from the estimators package.
Commands resolve names here, so ``wavefront.sim`` never imports ``wavefront.estimators``.
"""
from __future__ import annotations

from pathlib import Path

from wavefront.errors import ConfigError


def resolve_estimators(names: list[str], prior, device="cpu", robust_options: dict | None = None) -> list:
    """Returns estimator objects for ``names``: classical, ``perfect``, a learned model name or a checkpoint path.

    ``prior``: the SystemConfig whose grid the estimators serve and whose channel ranges they
    may assume (see :func:`wavefront.sim.experiment.prior_config`).
    """
    from wavefront.sim.estimators import CLASSICAL, classical_estimators
    from wavefront.sim.mimo import MIMO_CLASSICAL, SIONNA

    out = []
    for name in names:
        mimo = prior.mimo.is_mimo
        if "+" in name:  # one checkpoint per user (a model that is not frequency-shift invariant), in user order
            out.append(learned_estimator(name, prior, device))
            continue
        if name in CLASSICAL or name == "perfect" or (mimo and name in SIONNA + MIMO_CLASSICAL):
            out += classical_estimators([name], prior, robust_options)
            continue
        if name in SIONNA + MIMO_CLASSICAL:  # not SISO (the branch above took those): named as what it is, not unknown
            raise ConfigError("estimators", name, "is a MIMO estimator: give --rx-antennas R and/or --users U "
                                                  "(this config has one antenna and one user)")
        try:
            from wavefront.estimators.registry import list_models
        except ImportError:
            raise ConfigError("estimators", name, f"unknown estimator; choose from {', '.join(CLASSICAL)}, perfect") from None
        if name not in list_models() and not (name.endswith(".safetensors") or Path(name).exists()):
            raise ConfigError("estimators", name, f"unknown estimator; choose from {', '.join(CLASSICAL)}, perfect, "
                              f"a learned model ({', '.join(list_models())}) or a checkpoint path")
        out.append(learned_estimator(name, prior, device))
    return out


def learned_estimator(name: str, config, device="cpu", conditions: str | None = None):
    """Returns the learned estimator ``name`` (a model name, a checkpoint path, or under MIMO one checkpoint per user
    joined by ``+``) for ``config``; ``conditions`` as :func:`wavefront.estimators.load_estimator` takes it.

    Under MIMO it is a SISO model per (antenna, user), wrapped in :class:`~wavefront.sim.mimo.PerUser`: each
    user's own pilot layout must be the one its checkpoint was trained on (or that layout moved, for a
    ``frequency_shift_invariant`` model).
    """
    from wavefront.estimators import load_estimator

    if not config.mimo.is_mimo:
        if "+" in name:
            raise ConfigError("estimators", name, "one checkpoint per user ('+') needs several antennas or users")
        return load_estimator(name, config, device=device, conditions=conditions)
    from wavefront.sim.mimo import PerUser, user_configs

    users = user_configs(config)
    if "+" not in name:
        try:
            return PerUser.wrapping([load_estimator(name, c, device=device, conditions=conditions) for c in users])
        except ConfigError as e:
            if e.field != "checkpoint" or "pilot" not in str(e):
                raise
            raise ConfigError(e.field, e.value, f"{e.rule}; a model that is not frequency-shift invariant needs "
                                                "one checkpoint per user (wavefront train --user u), given as "
                                                "U0.safetensors+U1.safetensors+...") from None
    paths = [p.strip() for p in name.split("+")]
    if len(paths) != len(users) or not all(paths):
        raise ConfigError("estimators", name, f"give one checkpoint per user joined by '+': the config has "
                                              f"{len(users)} users, this names {len(paths)}")
    per_user = []
    for u, (path, user) in enumerate(zip(paths, users)):
        try:
            per_user.append(load_estimator(path, user, device=device, conditions=conditions))
        except ConfigError as e:
            raise ConfigError(e.field, e.value, f"{e.rule} (checkpoint {u + 1} of the '+' list serves user {u}: train it "
                                                f"with wavefront train --user {u})") from None
    return PerUser.wrapping(per_user)


def learned_available() -> bool:
    """Returns whether the learned estimators (and their shipped checkpoints) are installed."""
    import importlib.util

    return importlib.util.find_spec("wavefront.estimators") is not None
