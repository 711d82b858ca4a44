import subprocess
import sys
from pathlib import Path

from continual.workspace.create import create_workspace
from continual.workspace.layout import Workspace

ROOT = Path(__file__).resolve().parents[1]


def test_the_repository_is_itself_a_workspace_on_the_shipped_templates():
    for name in ("dvc.yaml", "params.yaml"):
        assert (ROOT / name).read_text() == (ROOT / "continual" / "template" / name).read_text(), name
    assert Workspace.at(ROOT).stream() == [] or (ROOT / "data" / "arrivals").is_dir()


def test_init_creates_a_git_dvc_workspace(tmp_path):
    ws = create_workspace(tmp_path / "ws")
    for path in (".git", ".dvc", "dvc.yaml", "params.yaml", "stream.yaml", "data/arrivals"):
        assert (ws.root / path).exists(), path
    assert ws.stream() == []
    staged = subprocess.run(["git", "diff", "--cached", "--name-only"], cwd=ws.root, capture_output=True,
                            text=True, check=True).stdout
    assert "dvc.yaml" in staged and "stream.yaml" in staged


def test_help_does_not_import_torch_or_avalanche():
    code = ("import sys; from continual.cli import build_parser; build_parser(); "
            "print(any(m.split('.')[0] in ('torch', 'avalanche', 'mlflow') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_the_serving_app_never_imports_training_code(tiny_model_dir):
    code = (f"import sys; from service import create_app; app = create_app({{'model_uri': {str(tiny_model_dir)!r}}}); "
            "app.test_client().post('/predict', json={'texts': ['hello']}); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'continual', 'avalanche', 'dvc'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stderr[-2000:]
