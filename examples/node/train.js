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
const { ROOT, grpc, load, toStruct, address, metadata, authorize, call, run } =
  require("./common");

const metalearn = load("metalearn/v1/attempt_service.proto");

// A TrainCommand from the example's JSON: its Struct fields wrapped, the rest as it is.
function trainCommand(json) {
  const command = { ...json };
  for (const field of ["optimizer", "criterion", "scheduler", "transform", "target_transform"]) {
    if (json[field]) command[field] = toStruct(json[field]);
  }
  command.model = { layers: json.model.layers.map(toStruct) };
  return command;
}

async function main() {
  const name = process.argv[2] || "node-lenet";
  const commandFile = process.argv[3] || path.join(ROOT, "examples", "digits_lenet.json");
  authorize();
  // Plaintext for a gateway on this machine; with TLS, grpc.credentials.createSsl(ca).
  const client = new metalearn.AttemptService(address(), grpc.credentials.createInsecure());
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

run(main);
