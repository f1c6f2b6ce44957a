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
            out.append(_per_user_checkpoints(name, prior, device))
            continue
        if name in CLASSICAL or name == "perfect" or (mimo and name in SIONNA + MIMO_CLASSICAL):
            out += classical_estimators([name], prior, robust_options)
            continue
        try:
            from wavefront.estimators import load_estimator
            from wavefront.estimators.registry import list_models
        except ImportError:
            raise ConfigError("estimators", name, f"unknown estimator; choose from {', '.join(CLASSICAL)}, perfect") from None
        if name not in list_models() and not (name.endswith(".safetensors") or Path(name).exists()):
            raise ConfigError("estimators", name, f"unknown estimator; choose from {', '.join(CLASSICAL)}, perfect, "
                              f"a learned model ({', '.join(list_models())}) or a checkpoint path")
        if mimo:  # a SISO model per (antenna, user): each user's own pilot layout must be the one it was trained on
            from wavefront.sim.mimo import PerUser, user_configs

            try:
                out.append(PerUser.wrapping([load_estimator(name, c, device=device) for c in user_configs(prior)]))
            except ConfigError as e:
                if e.field != "checkpoint" or "pilot" not in str(e):
                    raise
                raise ConfigError(e.field, e.value, f"{e.rule}; a model that is not frequency-shift invariant needs "
                                                    "one checkpoint per user (wavefront train --user u), given as "
                                                    "U0.safetensors+U1.safetensors+...") from None
        else:
            out.append(load_estimator(name, prior, device=device))
    return out


def _per_user_checkpoints(name: str, prior, device):
    """Returns ``U0.safetensors+U1.safetensors+...`` as one MIMO row: checkpoint u on user u's pilots."""
    paths = [p.strip() for p in name.split("+")]
    if not prior.mimo.is_mimo:
        raise ConfigError("estimators", name, "one checkpoint per user ('+') needs several antennas or users")
    from wavefront.sim.mimo import PerUser, user_configs

    users = user_configs(prior)
    if len(paths) != len(users) or not all(paths):
        raise ConfigError("estimators", name, f"give one checkpoint per user joined by '+': the config has "
                                              f"{len(users)} users, this names {len(paths)}")
    from wavefront.estimators import load_estimator

    per_user = []
    for u, (path, user) in enumerate(zip(paths, users)):
        try:
            per_user.append(load_estimator(path, user, device=device))
        except ConfigError as e:
            raise ConfigError(e.field, e.value, f"{e.rule} (checkpoint {u + 1} of the '+' list serves user {u}: train it "
                                                f"with wavefront train --user {u})") from None
    return PerUser.wrapping(per_user)


def learned_available() -> bool:
    """Returns whether the learned estimators (and their shipped checkpoints) are installed."""
    import importlib.util

    return importlib.util.find_spec("wavefront.estimators") is not None
