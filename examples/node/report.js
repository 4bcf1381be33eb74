// Reports a run of your own training code to metalearn, from the .proto files alone:
// StartRun, one ReportRun stream with a batch per epoch (each acknowledged before the
// next, stopping early when the gateway says stop), then FinishRun with a test result.
// The "training" here is a stand-in loop in plain JS: 5 epochs of a made-up falling loss
// and rising validation accuracy, with a "train/loss" point at each of 20 steps an epoch;
// SECONDS makes each epoch take that long, as real training would (cancel it meanwhile:
// `metalearn cancel NAME`, and the script stops at its next batch).
//
//   npm ci && METALEARN_GATEWAY=127.0.0.1:50051 node report.js [name] [seconds]
//
// The token and errors as for train.js (see common.js): METALEARN_TOKEN, else
// .metalearn/admin.token (or $METALEARN_DATA_DIR); a refused request exits 1 printing
// its code and every field violation.
"use strict";

const { grpc, load, toStruct, address, metadata, authorize, call, run } = require("./common");

const metalearn = load("metalearn/v1/reporting_service.proto");
const EPOCHS = 5;
const STEPS_PER_EPOCH = 20;
const PARAMS = { lr: 0.05, lr_decay: 0.8, batch_size: 32, model: { hidden: [64, 32] } };

// One epoch of the stand-in training: the loss of each step (falling, with a little
// deterministic wobble as real minibatches have) and the epoch's validation numbers.
function trainEpoch(epoch) {
  const steps = [];
  const losses = [];
  for (let i = 1; i <= STEPS_PER_EPOCH; i++) {
    const step = (epoch - 1) * STEPS_PER_EPOCH + i;
    steps.push(step);
    losses.push(0.2 + 1.2 / (1 + step / STEPS_PER_EPOCH) + ((step * 37) % 11 - 5) / 200);
  }
  const loss = losses.reduce((a, b) => a + b, 0) / losses.length;
  return {
    steps,
    losses,
    loss,
    val_loss: loss + 0.05 * epoch / EPOCHS,
    val_accuracy: 0.5 + 0.4 * epoch / (epoch + 1),
    learning_rate: PARAMS.lr * PARAMS.lr_decay ** (epoch - 1),
  };
}

// ReportRun's replies one at a time: next() resolves with the next reply, or null once
// the gateway ends the stream; a stream error rejects the pending (or next) next().
function replies(stream) {
  const ready = [];
  const waiting = [];
  let failure = null;
  let ended = false;
  const settle = () => {
    while (waiting.length && (ready.length || failure || ended)) {
      const { resolve, reject } = waiting.shift();
      if (ready.length) resolve(ready.shift());
      else if (failure) reject(failure);
      else resolve(null);
    }
  };
  stream.on("data", (reply) => { ready.push(reply); settle(); });
  stream.on("error", (err) => { failure = err; settle(); });
  stream.on("end", () => { ended = true; settle(); });
  return () => new Promise((resolve, reject) => { waiting.push({ resolve, reject }); settle(); });
}

async function main() {
  const name = process.argv[2] || "node-report";
  const pace = Number(process.argv[3] || 0);
  if (!(pace >= 0)) throw new Error(`seconds per epoch: a number >= 0, not ${process.argv[3]}`);
  authorize();
  // Plaintext for a gateway on this machine; with TLS, grpc.credentials.createSsl(ca).
  const client = new metalearn.ReportingService(address(), grpc.credentials.createInsecure());

  const { attempt: started } = await call(client, "StartRun", {
    name,
    task: { dataset: "toy", labels: ["cat", "dog"] },
    params: toStruct(PARAMS),
    tags: { example: "node" },
    n_epoch: EPOCHS,
    client: "metalearn-node-example/0.1",
  });
  const id = started.id; // int64, a Number thanks to `longs: Number`
  console.log(`started ${name} (id ${id})`);

  // One stream for the whole run; a batch per epoch, so each waits for the one before to
  // be stored (the gateway acknowledges a batch once it is).
  const stream = client.ReportRun(metadata);
  const next = replies(stream);
  stream.write({ attempt_id: id });
  let last = 0;
  let stop = null;
  for (let epoch = 1; epoch <= EPOCHS && !stop; epoch++) {
    const began = process.hrtime.bigint();
    await new Promise((resolve) => setTimeout(resolve, pace * 1000));
    const e = trainEpoch(epoch);
    const seconds = Number(process.hrtime.bigint() - began) / 1e9;
    stream.write({
      batch: {
        sequence: epoch,
        epochs: [{ epoch, loss: e.loss, val_loss: e.val_loss, val_accuracy: e.val_accuracy,
          learning_rate: e.learning_rate, seconds }],
        metrics: [{ key: "train/loss", steps: e.steps, values: e.losses }],
      },
    });
    const reply = await next();
    if (reply === null) throw new Error(`the gateway ended the stream before epoch ${epoch}`);
    // `reply.kind` names the oneof member that is set.
    if (reply.kind === "stop") {
      stop = reply.stop;
    } else {
      last = reply.acknowledged.current_epoch;
      // Each number as JS prints it: the shortest text that reads back as the double sent.
      console.log(`epoch ${epoch}  loss ${e.loss}  val_loss ${e.val_loss}  ` +
        `val_accuracy ${e.val_accuracy}  lr ${e.learning_rate}  ` +
        `${e.steps.length} train/loss points  acknowledged (batch ${reply.acknowledged.sequence})`);
    }
  }
  stream.end();
  await next(); // the gateway ends its side once ours is closed (or after a stop)

  if (stop) {
    // The run ended on the gateway's side (cancelled, pruned, ...): nothing to finish.
    console.log(`stopped ${name} (id ${id}) after epoch ${last}: ${stop.status}: ${stop.reason}`);
    client.close();
    return;
  }
  const final = trainEpoch(last);
  const { attempt } = await call(client, "FinishRun", {
    attempt_id: id,
    end: "RUN_END_FINISHED",
    last_epoch: last, // refused if the gateway stored fewer: nothing silently lost
    test_result: { accuracy: final.val_accuracy - 0.01, loss: final.val_loss + 0.01 },
  });
  console.log(`reported run ${attempt.name} (id ${attempt.id}): ${attempt.status}, ` +
    `provenance ${attempt.provenance}`);
  client.close();
}

run(main);
