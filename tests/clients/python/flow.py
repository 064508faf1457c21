"""A user's first session through a Python client generated from openapi/openapi.json
(openapi-python-client), run by scripts/clients against a live server: register a simulated
cluster, create an app, put a canary environment, deploy and follow the deployment to
`succeeded`, deploy again, promote the paused canary, read the audit log.

Needs SLIPWAY_URL, SLIPWAY_TOKEN and the generated package `slipway_client` on PYTHONPATH.
"""

import os
import sys
import time

from slipway_client import AuthenticatedClient
from slipway_client.api.access import list_audit_entries
from slipway_client.api.apps import create_app
from slipway_client.api.clusters import create_cluster
from slipway_client.api.deployments import (
    create_deployment,
    get_deployment,
    send_deployment_command,
)
from slipway_client.api.environments import put_environment
from slipway_client.models import (
    CanaryStepType0,
    CanaryStepType1,
    CanaryStrategySpec,
    CanaryStrategySpecType,
    ClusterKind,
    ClusterSpec,
    CommandKind,
    CommandRequest,
    DeploymentRequest,
    DeploymentStatus,
    EnvironmentSpec,
    NewApp,
    PauseStep,
    Problem,
    ReplicasTrafficRouting,
    ReplicasTrafficRoutingRouter,
    Source,
    Workload,
)

CLUSTER = "sim-py"
APP = "py-flow"
ENV = "prod"
ENDED = {
    DeploymentStatus.FAILED,
    DeploymentStatus.ROLLED_BACK,
    DeploymentStatus.CANCELLED,
    DeploymentStatus.SUPERSEDED,
}


def fail(message):
    print(f"python client flow: {message}", file=sys.stderr)
    sys.exit(1)


def ok(step, response, status):
    """The parsed body of an answer with `status`, or the flow fails naming the step."""
    if response.status_code != status or response.parsed is None or isinstance(response.parsed, Problem):
        fail(f"{step}: {response.status_code} {response.content!r}, expected {status}")
    return response.parsed


def follow(client, deployment_id, until):
    deadline = time.monotonic() + 60
    while True:
        deployment = ok(
            f"get deployment {deployment_id}",
            get_deployment.sync_detailed(str(deployment_id), client=client),
            200,
        )
        if deployment.status == until:
            return deployment
        if deployment.status in ENDED:
            fail(f"deployment {deployment_id} ended {deployment.status.value}, waiting for {until.value}")
        if time.monotonic() > deadline:
            fail(f"deployment {deployment_id} is still {deployment.status.value} after 60 s, waiting for {until.value}")
        time.sleep(0.2)


def deploy(client, image, key):
    request = DeploymentRequest(
        image=image,
        reason="client flow",
        source=Source(repository="acme/web", user="py"),
    )
    return ok(
        f"deploy {image}",
        create_deployment.sync_detailed(APP, ENV, client=client, body=request, idempotency_key=key),
        201,
    )


def main():
    client = AuthenticatedClient(
        base_url=os.environ.get("SLIPWAY_URL", "http://127.0.0.1:8080"),
        token=os.environ["SLIPWAY_TOKEN"],
        raise_on_unexpected_status=True,
    )
    ok(
        "create cluster",
        create_cluster.sync_detailed(client=client, body=ClusterSpec(name=CLUSTER, kind=ClusterKind.SIMULATED)),
        201,
    )
    app = ok(
        "create app",
        create_app.sync_detailed(client=client, body=NewApp(name=APP, description="Python client flow")),
        201,
    )
    if app.name != APP:
        fail(f"create app answered {app.to_dict()}")

    spec = EnvironmentSpec(
        cluster=CLUSTER,
        namespace=APP,
        workload=Workload(name="web", container="web", replicas=2, port=8080),
        strategy=CanaryStrategySpec(
            type_=CanaryStrategySpecType.CANARY,
            steps=[CanaryStepType0(set_weight=50), CanaryStepType1(pause=PauseStep())],
            traffic=ReplicasTrafficRouting(router=ReplicasTrafficRoutingRouter.REPLICAS),
        ),
    )
    environment = ok(
        "put environment",
        put_environment.sync_detailed(APP, ENV, client=client, body=spec),
        201,
    )
    if not isinstance(environment.strategy, CanaryStrategySpec):
        fail(f"put environment answered a strategy of {type(environment.strategy).__name__}")

    # The first deployment has no stable version to shift from: it goes out at once.
    first = deploy(client, "ghcr.io/acme/web:1.0.0", "py-flow-1")
    follow(client, first.id, DeploymentStatus.SUCCEEDED)

    # The second runs the canary steps and holds at the pause until promoted.
    second = deploy(client, "ghcr.io/acme/web:1.1.0", "py-flow-2")
    follow(client, second.id, DeploymentStatus.PAUSED)
    accepted = ok(
        "promote",
        send_deployment_command.sync_detailed(
            str(second.id),
            CommandKind.PROMOTE,
            client=client,
            body=CommandRequest(reason="canary looks good"),
        ),
        202,
    )
    if accepted.deployment.id != second.id:
        fail(f"promote answered {accepted.to_dict()}")
    done = follow(client, second.id, DeploymentStatus.SUCCEEDED)
    if done.version != "1.1.0":
        fail(f"the promoted deployment serves {done.version}")

    trail = ok("read the audit log", list_audit_entries.sync_detailed(client=client, limit=500), 200)
    written = {(entry.method, entry.path) for entry in trail.items}
    for expected in [
        ("POST", "/v1/apps"),
        ("PUT", f"/v1/apps/{APP}/environments/{ENV}"),
        ("POST", f"/v1/deployments/{second.id}/promote"),
    ]:
        if expected not in written:
            fail(f"the audit log has no {expected[0]} {expected[1]}")
    print(f"python client flow: ok (deployment {second.id} promoted and succeeded)")


if __name__ == "__main__":
    main()
