// Trains the LeNet example on the digits through a metalearn gateway, from the .proto
// files alone: create the attempt, queue training, follow WatchAttempt, get the result.
//
//   npm ci && METALEARN_GATEWAY=127.0.0.1:50051 node train.js [name] [command.json]
//
// Every call carries `authorization: Bearer <token>`: METALEARN_TOKEN, else the admin
// token a local gateway wrote to ./.metalearn/admin.token (or $METALEARN_DATA_DIR).
// A refused request prints its code and every field violation: the gateway sends a
// google.rpc.Status with a google.rpc.BadRequest in the `grpc-status-details-bin`
// trailer, decoded here with the copies of googleapis' protos in protos/google/rpc.
"use strict";

const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const ROOT = path.resolve(__dirname, "..", "..");
const definition = protoLoader.loadSync("metalearn/v1/attempt_service.proto", {
  includeDirs: [path.join(ROOT, "protos")],
  keepCase: true, // the prototype's field names: training_commands, label_names, ...
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});
const metalearn = grpc.loadPackageDefinition(definition).metalearn.v1;
const rpc = new protobuf.Root().loadSync(
  ["status.proto", "error_details.proto"].map((f) => path.join(ROOT, "protos", "google", "rpc", f)),
  { keepCase: true });
const Status = rpc.lookupType("google.rpc.Status");
const BadRequest = rpc.lookupType("google.rpc.BadRequest");

// google.protobuf.Struct, as protobuf.js wants it: every JSON value wrapped by its kind.
// (protobuf.js bundles the well-known types with camelCase names, whatever keepCase says.)
function toValue(value) {
  if (value === null) return { nullValue: "NULL_VALUE" };
  if (Array.isArray(value)) return { listValue: { values: value.map(toValue) } };
  switch (typeof value) {
    case "number": return { numberValue: value };
    case "string": return { stringValue: value };
    case "boolean": return { boolValue: value };
    default: return { structValue: toStruct(value) };
  }
}
function toStruct(object) {
  return { fields: Object.fromEntries(Object.entries(object).map(([k, v]) => [k, toValue(v)])) };
}

// A TrainCommand from the example's JSON: its Struct fields wrapped, the rest as it is.
function trainCommand(json) {
  const command = { ...json };
  for (const field of ["optimizer", "criterion", "scheduler", "transform", "target_transform"]) {
    if (json[field]) command[field] = toStruct(json[field]);
  }
  command.model = { layers: json.model.layers.map(toStruct) };
  return command;
}

// METALEARN_TOKEN, else admin.token in $METALEARN_DATA_DIR, else in the .metalearn of
// this directory or of the repository's root (where the README runs `metalearn up`), so
// `node train.js` works from examples/node too.
function token() {
  if (process.env.METALEARN_TOKEN) return process.env.METALEARN_TOKEN.trim();
  const dirs = process.env.METALEARN_DATA_DIR
    ? [process.env.METALEARN_DATA_DIR]
    : [".metalearn", path.join(ROOT, ".metalearn")];
  const files = dirs.map((dir) => path.resolve(dir, "admin.token"));
  const found = files.find((file) => fs.existsSync(file));
  if (!found) {
    throw new Error(`no token: set METALEARN_TOKEN, or METALEARN_DATA_DIR to the gateway's` +
      ` data directory (looked for ${files.join(" and ")})`);
  }
  return fs.readFileSync(found, "utf8").trim();
}

// The bearer token, sent with every call.
const metadata = new grpc.Metadata();

function call(client, method, request) {
  return new Promise((resolve, reject) =>
    client[method](request, metadata, { deadline: Date.now() + 30_000 }, (err, reply) =>
      err ? reject(err) : resolve(reply)));
}

async function main() {
  const address = process.env.METALEARN_GATEWAY || "127.0.0.1:50051";
  const name = process.argv[2] || "node-lenet";
  const commandFile = process.argv[3] || path.join(ROOT, "examples", "digits_lenet.json");
  metadata.set("authorization", `Bearer ${token()}`);
  // Plaintext for a gateway on this machine; with TLS, grpc.credentials.createSsl(ca).
  const client = new metalearn.AttemptService(address, grpc.credentials.createInsecure());
  const json = JSON.parse(fs.readFileSync(commandFile));
  const command = trainCommand(json);

  try {
    await call(client, "CreateAttempt", { attempt: { name, training_commands: command } });
    console.log(`created ${name}`);
  } catch (err) {
    if (err.code !== grpc.status.ALREADY_EXISTS) throw err;
    console.log(`${name} exists: training it again`);
  }
  const queued = await call(client, "Train", { name, command });
  console.log(`${name} (id ${queued.attempt.id}) ${queued.attempt.status}`);

  const terminal = ["ATTEMPT_STATUS_TRAINED", "ATTEMPT_STATUS_COMPLETE",
    "ATTEMPT_STATUS_FAILED", "ATTEMPT_STATUS_CANCELLED"];
  await new Promise((resolve, reject) => {
    const stream = client.WatchAttempt({ name }, metadata);
    stream.on("data", (event) => {
      // `event.event` names the oneof member that is set.
      if (event.event === "epoch") {
        const e = event.epoch;
        console.log(`epoch ${e.epoch}  loss ${e.loss.toFixed(4)}  ` +
          `val accuracy ${e.val_accuracy.toFixed(3)}`);
      } else if (event.event === "status" && terminal.includes(event.status.status)) {
        stream.cancel();
        resolve();
      }
    });
    stream.on("error", (err) => (err.code === grpc.status.CANCELLED ? resolve() : reject(err)));
    stream.on("end", resolve);
  });

  const { attempt } = await call(client, "GetAttempt", { name });
  const losses = attempt.training_losses;
  console.log(`${name} ${attempt.status}: ${losses.length} epochs, ` +
    `last loss ${losses[losses.length - 1].toFixed(4)}` +
    (attempt.error ? `, error: ${attempt.error}` : ""));
  client.close();
  if (attempt.status !== "ATTEMPT_STATUS_TRAINED") process.exitCode = 1;
}

// The field violations of a failed call: "field: problem" for each.
function violations(err) {
  const [bytes] = err.metadata ? err.metadata.get("grpc-status-details-bin") : [];
  if (!bytes) return [];
  return Status.decode(bytes).details
    .filter((any) => any.type_url === "type.googleapis.com/google.rpc.BadRequest")
    .flatMap((any) => BadRequest.decode(any.value).field_violations)
    .map((v) => `${v.field}: ${v.description}`);
}

main().catch((err) => {
  const code = Object.keys(grpc.status).find((k) => grpc.status[k] === err.code) || "ERROR";
  console.error(`node example: ${code}: ${err.details || err.message}`);
  for (const line of violations(err)) console.error(`  ${line}`);
  process.exitCode = 1;
});
