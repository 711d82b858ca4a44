"""The registered model's code, logged as MLflow's "models from code" (no pickled object): MLflow runs this file
when it loads the model, and ``set_model`` names the ``PythonModel`` to use. ``service`` travels beside it as
the model's code path."""
import mlflow.models

from service.pyfunc import PooledPyfunc

mlflow.models.set_model(PooledPyfunc())
