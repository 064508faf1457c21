// A user's first session through a TypeScript client generated from openapi/openapi.json
// (openapi-typescript types + openapi-fetch), run by scripts/clients against a live server:
// register a simulated cluster, create an app, put a canary environment, deploy and follow
// the deployment to `succeeded`, deploy again, promote the paused canary, read the audit log.
// It is type-checked (tsc --strict) against the generated types before it runs.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

declare const process: {
  env: Record<string, string | undefined>;
  exit(code?: number): never;
};

type Deployment = components["schemas"]["Deployment"];
type EnvironmentSpec = components["schemas"]["EnvironmentSpec"];

const baseUrl = process.env.SLIPWAY_URL ?? "http://127.0.0.1:8080";
const token = process.env.SLIPWAY_TOKEN ?? "";
const client = createClient<paths>({
  baseUrl,
  headers: { Authorization: `Bearer ${token}` },
});

function fail(message: string): never {
  console.error(`typescript client flow: ${message}`);
  process.exit(1);
}

/** The data of a successful answer, or the flow fails naming the step and the problem. */
function ok<T>(step: string, answer: { data?: T; error?: unknown; response: Response }): T {
  if (answer.data === undefined) {
    fail(`${step}: ${answer.response.status} ${JSON.stringify(answer.error)}`);
  }
  return answer.data;
}

async function follow(id: string, until: Deployment["status"]): Promise<Deployment> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const deployment = ok(
      `get deployment ${id}`,
      await client.GET("/v1/deployments/{id}", { params: { path: { id } } }),
    );
    if (deployment.status === until) {
      return deployment;
    }
    if (["failed", "rolled_back", "cancelled", "superseded"].includes(deployment.status)) {
      fail(`deployment ${id} ended ${deployment.status}, waiting for ${until}`);
    }
    if (Date.now() > deadline) {
      fail(`deployment ${id} is still ${deployment.status} after 60 s, waiting for ${until}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

async function deploy(app: string, env: string, image: string, key: string): Promise<Deployment> {
  const answer = await client.POST("/v1/apps/{app}/environments/{env}/deployments", {
    params: { path: { app, env }, header: { "Idempotency-Key": key } },
    body: { image, reason: "client flow", source: { repository: "acme/web", user: "ts" } },
  });
  const created = ok(`deploy ${image}`, answer);
  if (answer.response.status !== 201) {
    fail(`deploy ${image}: ${answer.response.status}, expected 201`);
  }
  return created;
}

const cluster = "sim-ts";
const app = "ts-flow";
const env = "prod";

ok(
  "create cluster",
  await client.POST("/v1/clusters", { body: { name: cluster, kind: "simulated" } }),
);
const created = ok(
  "create app",
  await client.POST("/v1/apps", { body: { name: app, description: "TypeScript client flow" } }),
);
if (created.name !== app) {
  fail(`create app answered ${JSON.stringify(created)}`);
}

const spec: EnvironmentSpec = {
  cluster,
  namespace: app,
  workload: { name: "web", container: "web", replicas: 2, port: 8080 },
  strategy: {
    type: "canary",
    steps: [{ set_weight: 50 }, { pause: {} }],
    traffic: { router: "replicas" },
  },
};
const environment = ok(
  "put environment",
  await client.PUT("/v1/apps/{app}/environments/{env}", {
    params: { path: { app, env } },
    body: spec,
  }),
);
if (environment.strategy?.type !== "canary") {
  fail(`put environment answered ${JSON.stringify(environment)}`);
}

// The first deployment has no stable version to shift from: it goes out at once.
const first = await deploy(app, env, "ghcr.io/acme/web:1.0.0", "ts-flow-1");
await follow(first.id, "succeeded");

// The second runs the canary steps and holds at the pause until promoted.
const second = await deploy(app, env, "ghcr.io/acme/web:1.1.0", "ts-flow-2");
await follow(second.id, "paused");
const accepted = ok(
  "promote",
  await client.POST("/v1/deployments/{id}/{command}", {
    params: { path: { id: second.id, command: "promote" } },
    body: { reason: "canary looks good" },
  }),
);
if (accepted.deployment.id !== second.id) {
  fail(`promote answered ${JSON.stringify(accepted)}`);
}
const done = await follow(second.id, "succeeded");
if (done.version !== "1.1.0") {
  fail(`the promoted deployment serves ${done.version}`);
}

const trail = ok(
  "read the audit log",
  await client.GET("/v1/audit", { params: { query: { limit: 500 } } }),
);
const wrote = (method: string, path: string) =>
  trail.items.some((entry) => entry.method === method && entry.path === path);
for (const [method, path] of [
  ["POST", "/v1/apps"],
  ["PUT", `/v1/apps/${app}/environments/${env}`],
  ["POST", `/v1/deployments/${second.id}/promote`],
] as const) {
  if (!wrote(method, path)) {
    fail(`the audit log has no ${method} ${path}`);
  }
}
console.log(`typescript client flow: ok (deployment ${second.id} promoted and succeeded)`);
