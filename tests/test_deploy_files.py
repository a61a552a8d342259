"""The deployment files agree with what the exporter writes (no Docker engine here to run them)."""

import subprocess
import sys
from pathlib import Path

import yaml

from recgpt_tf.export.publish import write_batching_parameters, write_models_config

DEPLOY = Path(__file__).resolve().parents[1] / "serving" / "deploy"
FLAGS = {
    "--model_config_file=/models/models.config",
    "--batching_parameters_file=/models/batching_parameters.txt",
    "--enable_batching=true",
    "--enable_model_warmup=true",
}


def test_compose_mounts_the_export_base_for_both_images(tmp_path):
    services = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    images = {s["image"].split(":")[0] for s in services.values()}
    assert images == {"tensorflow/serving", "google/tf-serving-scann"}
    for service in services.values():
        assert FLAGS <= set(service["command"])
        assert any(v.endswith(":/models:ro") for v in service["volumes"])


def test_kubernetes_deployments_mount_the_export_base(tmp_path):
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()))
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert {d["spec"]["template"]["spec"]["containers"][0]["image"].split(":")[0] for d in deployments} == {
        "tensorflow/serving",
        "google/tf-serving-scann",
    }
    for d in deployments:
        container = d["spec"]["template"]["spec"]["containers"][0]
        assert FLAGS <= set(container["args"]) and container["volumeMounts"][0]["mountPath"] == "/models"


def test_exported_config_paths_match_the_mount(tmp_path):
    write_models_config(tmp_path, "recgpt")
    write_models_config(tmp_path, "other")  # a second model keeps the first listed
    text = (tmp_path / "models.config").read_text()
    assert 'base_path: "/models/recgpt"' in text and 'base_path: "/models/other"' in text
    # An operator's version labels survive the next export's update.
    (tmp_path / "models.config").write_text(text.replace('name: "recgpt"', 'name: "recgpt"\n    version_labels { key: "stable" value: 1 }'))
    write_models_config(tmp_path, "third")
    from recgpt_tf.serving.servable import read_version_labels

    assert read_version_labels(tmp_path) == {"other": {}, "recgpt": {"stable": 1}, "third": {}}
    write_batching_parameters(tmp_path)
    assert "max_batch_size { value: 64 }" in (tmp_path / "batching_parameters.txt").read_text()


def test_the_training_job_runs_the_multi_worker_strategy_on_a_shared_run_directory():
    job = yaml.safe_load((DEPLOY / "train-tfjob.yaml").read_text())
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    container = worker["template"]["spec"]["containers"][0]
    command = container["command"]
    assert job["kind"] == "TFJob" and worker["replicas"] >= 2 and container["name"] == "tensorflow"
    assert command[:2] == ["recgpt", "train"] and command[command.index("--strategy") + 1] == "multi-worker"
    # Every replica names the same run directory, on a volume they all mount (the chief writes it).
    out = command[command.index("--out") + 1]
    mounts = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert any(out.startswith(path + "/") for path in mounts) and "TF_CONFIG" not in str(container)


def test_the_parameter_server_job_has_a_coordinating_chief_and_task_servers():
    specs = yaml.safe_load((DEPLOY / "train-tfjob-ps.yaml").read_text())["spec"]["tfReplicaSpecs"]
    command = {role: spec["template"]["spec"]["containers"][0]["command"] for role, spec in specs.items()}
    assert specs["Chief"]["replicas"] == 1 and specs["PS"]["replicas"] >= 2 and specs["Worker"]["replicas"] >= 2
    assert command["Chief"][command["Chief"].index("--strategy") + 1] == "parameter-server"
    assert command["Worker"] == command["PS"] == ["recgpt", "cluster-task"]


def test_the_readme_results_table_is_the_one_generated_from_the_result_files(tmp_path):
    """No figure in the README's results table is typed by hand: benchmarks/headline.py regenerates it."""
    root = Path(__file__).resolve().parents[1]
    copy = tmp_path / "README.md"
    copy.write_text((root / "README.md").read_text())
    subprocess.run(
        [sys.executable, str(root / "benchmarks" / "headline.py"), "--out", str(tmp_path / "h.md"), "--readme", str(copy)],
        check=True,
        capture_output=True,
    )
    assert copy.read_text() == (root / "README.md").read_text()
