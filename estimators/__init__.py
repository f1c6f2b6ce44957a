"""wavefront.estimators: learned channel estimators behind one registry, their training loop and evaluation.

- ``create(name, system_config, **overrides)`` builds a model (``list_models()`` names them);
- ``load_estimator(name_or_path, system_config, device)`` returns a trained estimator with
  ``name`` and ``estimate(pilots [B,P_f,P_t] c64, meta) -> [B,F,T] c64``, as the sweep expects;
- ``wavefront.estimators.train`` holds the training loop, ``.checkpoint`` the safetensors format;
  ``.mimo_train`` a loop on MIMO frames drawn on the fly (for ``antenna-attention``, which maps one
  user's antennas ``[B, R, P_f, P_t] -> [B, R, F, T]``);
- ``load_official(path_or_state_dict, system_config, model)`` converts a checkpoint of the official
  AdaFortiTran code (``wavefront.estimators.official_weights``).
"""
from wavefront.estimators.registry import EstimatorModel, count_parameters, create, list_models, model_defaults, register_model

__all__ = ["EstimatorModel", "count_parameters", "create", "list_models", "model_defaults", "register_model",
           "load_estimator", "LearnedEstimator", "load_official"]


def __getattr__(name):  # keep `import wavefront.estimators` light: checkpoint code loads on demand
    if name in ("load_estimator", "LearnedEstimator"):
        from wavefront.estimators import estimator

        return getattr(estimator, name)
    if name == "load_official":
        from wavefront.estimators.official_weights import load_official

        return load_official
    raise AttributeError(name)
