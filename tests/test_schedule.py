"""Scheduled retraining against the real kfp.Client with its generated API services faked.

The request objects asserted here (V2beta1RecurringRun, its trigger and runtime config) are the
ones kfp.Client itself builds from our call; only the HTTP transport is replaced.
"""

from __future__ import annotations

import json
from pathlib import Path
from unittest.mock import create_autospec

import kfp
import kfp_server_api as api
import pytest
import yaml

from rlsd.config import ConfigError, load_config
from rlsd.schedule import check_cron, schedule

PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "rlsd_pipeline.yaml"
KUBEFLOW = load_config(Path(__file__).resolve().parents[1] / "configs" / "kubeflow.yaml")


def client_with(existing):
    c = kfp.Client(host="http://127.0.0.1:8888", namespace="ml-prod")
    c._experiment_api = create_autospec(api.ExperimentServiceApi, instance=True)
    c._experiment_api.experiment_service_list_experiments.return_value = api.V2beta1ListExperimentsResponse(
        experiments=[api.V2beta1Experiment(experiment_id="exp-7", display_name="rlsd", namespace="ml-prod")],
        total_size=1)
    c._recurring_run_api = create_autospec(api.RecurringRunServiceApi, instance=True)
    c._recurring_run_api.recurring_run_service_list_recurring_runs.return_value = (
        api.V2beta1ListRecurringRunsResponse(recurring_runs=existing, total_size=len(existing)))
    c._recurring_run_api.recurring_run_service_create_recurring_run.side_effect = (
        lambda recurring_run: api.V2beta1RecurringRun(recurring_run_id="rr-new", display_name=recurring_run.display_name))
    return c


def test_creates_a_recurring_run_with_no_overlap_and_no_catchup():
    cfg = load_config(text="platform: {namespace: ml-prod, min_new_tickets: 25, gpus_per_node: 2}\nalgorithm: {name: rlsd}")
    c = client_with([])
    out = schedule(cfg, cron="0 0 2 * * *", client=c, pipeline_yaml=PIPELINE)
    assert out == {"recurring_run_id": "rr-new", "name": "rlsd-retraining", "cron": "0 0 2 * * *",
                   "experiment_id": "exp-7", "replaced": []}
    c._recurring_run_api.recurring_run_service_delete_recurring_run.assert_not_called()
    body = c._recurring_run_api.recurring_run_service_create_recurring_run.call_args.kwargs["recurring_run"]
    assert isinstance(body, api.V2beta1RecurringRun)
    assert (body.max_concurrency, body.no_catchup, body.mode) == (1, True, api.RecurringRunMode.ENABLE)
    assert body.trigger.cron_schedule.cron == "0 0 2 * * *" and body.trigger.periodic_schedule is None
    assert body.experiment_id == "exp-7" and body.service_account == "rlsd-pipeline-runner"
    spec, platform = yaml.safe_load_all(PIPELINE.read_text())  # the compiled package itself, Kubernetes part too
    assert body.pipeline_spec == {"pipeline_spec": spec, "platform_spec": platform}
    params = body.runtime_config.parameters
    assert params["min_new_tickets"] == 25 and params["algorithm"] == "rlsd" and params["gpus_per_node"] == 2
    assert load_config(text=params["config_yaml"]) == cfg  # the resolved recipe round-trips
    listed = c._recurring_run_api.recurring_run_service_list_recurring_runs.call_args.kwargs
    assert listed["experiment_id"] == "exp-7"
    assert json.loads(listed["filter"])["predicates"][0] == {"key": "display_name", "operation": "EQUALS",
                                                             "string_value": "rlsd-retraining"}


def test_update_replaces_the_run_of_the_same_name():
    old = [api.V2beta1RecurringRun(recurring_run_id="rr-old", display_name="rlsd-retraining"),
           api.V2beta1RecurringRun(recurring_run_id="rr-other", display_name="rlsd-retraining-weekly")]
    c = client_with(old)
    out = schedule(KUBEFLOW, cron="0 30 3 * * 1", client=c, pipeline_yaml=PIPELINE)
    assert out["replaced"] == ["rr-old"]
    c._recurring_run_api.recurring_run_service_delete_recurring_run.assert_called_once_with(recurring_run_id="rr-old")


def test_cron_needs_six_fields():
    assert check_cron(" 0 0 2 * * * ") == "0 0 2 * * *"
    with pytest.raises(ConfigError, match=r"did you mean '0 0 2 \* \* \*'"):
        check_cron("0 2 * * *")
    with pytest.raises(ConfigError, match="6 fields"):
        schedule(load_config(), cron="daily", client=object(), pipeline_yaml=PIPELINE)


def test_cli_rejects_a_five_field_cron_with_the_fix(capsys):
    from rlsd.cli import main

    assert main(["schedule", "--cron", "0 2 * * *"]) == 2
    assert "did you mean '0 0 2 * * *'" in capsys.readouterr().err


def test_the_readme_schedule_command_has_a_cron_the_command_accepts():
    import re
    from pathlib import Path

    from rlsd.schedule import check_cron

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    crons = re.findall(r'rlsd schedule --cron "([^"]+)"', readme)
    assert crons
    for cron in crons:
        check_cron(cron)


def test_an_update_the_server_refuses_keeps_the_running_schedule():
    """The KFP server validates what kfp.Client sends (a cron it cannot parse, e.g. minute 61; a service account
    it does not know; a timeout): when it refuses the new recurring run, the old one must still be scheduled,
    or retraining silently stops."""
    old = [api.V2beta1RecurringRun(recurring_run_id="rr-old", display_name="rlsd-retraining")]
    c = client_with(old)
    c._recurring_run_api.recurring_run_service_create_recurring_run.side_effect = api.ApiException(
        status=400, reason="Bad Request: invalid cron schedule")
    with pytest.raises(api.ApiException):
        schedule(KUBEFLOW, cron="0 61 2 * * *", client=c, pipeline_yaml=PIPELINE)
    c._recurring_run_api.recurring_run_service_delete_recurring_run.assert_not_called()


def test_a_recipe_asking_no_gpu_for_the_single_pod_route_is_refused_before_the_server():
    """The single-pod train step is pinned to GPU nodes: with 0 GPUs (the embedded defaults, a CPU recipe) a
    scheduled run would wait Pending for ever and hold every later one behind it (max_concurrency 1). The
    cluster recipe asks 1, as the pipeline's own default does."""
    c = client_with([])
    with pytest.raises(ConfigError, match=r"^platform.gpus_per_node is 0: .* set platform.gpus_per_node >= 1$"):
        schedule(load_config(), cron="0 0 2 * * *", client=c, pipeline_yaml=PIPELINE)
    c._recurring_run_api.recurring_run_service_create_recurring_run.assert_not_called()
    assert KUBEFLOW.platform.gpus_per_node == 1
    schedule(load_config(text="platform: {nodes: 2, gpus_per_node: 0}"), cron="0 0 2 * * *", client=c,
             pipeline_yaml=PIPELINE)  # the multi-node route's step holds no GPU: the TrainJob's pods do
