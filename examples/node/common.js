// What the Node examples (train.js, report.js) share: loading a service from the .proto
// files, the gateway's address and bearer token, calls with a deadline, Struct values,
// and printing a refused call's code and field violations.
//
// The token: METALEARN_TOKEN, else the admin token a local gateway wrote to
// ./.metalearn/admin.token (or $METALEARN_DATA_DIR). A refused request carries a
// google.rpc.Status with a google.rpc.BadRequest in the `grpc-status-details-bin`
// trailer, decoded here with the copies of googleapis' protos in protos/google/rpc.
"use strict";

const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const ROOT = path.resolve(__dirname, "..", "..");

// The metalearn.v1 package as declared by `file` (under protos/) and its imports.
function load(file) {
  const definition = protoLoader.loadSync(file, {
    includeDirs: [path.join(ROOT, "protos")],
    keepCase: true, // the prototype's field names: training_commands, label_names, ...
    longs: Number, // int64 ids and steps as plain numbers (exact up to 2^53)
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).metalearn.v1;
}

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

function address() {
  return process.env.METALEARN_GATEWAY || "127.0.0.1:50051";
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

// The bearer token, sent with every call; filled in by authorize() inside main, so a
// missing token is reported as any other error.
const metadata = new grpc.Metadata();

function authorize() {
  metadata.set("authorization", `Bearer ${token()}`);
}

function call(client, method, request) {
  return new Promise((resolve, reject) =>
    client[method](request, metadata, { deadline: Date.now() + 30_000 }, (err, reply) =>
      err ? reject(err) : resolve(reply)));
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

// Runs an example's main: any error ends it with exit code 1, its gRPC code (ERROR for
// one that is not a call's) and each field violation on stderr.
function run(main) {
  main().catch((err) => {
    const code = Object.keys(grpc.status).find((k) => grpc.status[k] === err.code) || "ERROR";
    console.error(`node example: ${code}: ${err.details || err.message}`);
    for (const line of violations(err)) console.error(`  ${line}`);
    process.exitCode = 1;
  });
}

module.exports = { ROOT, grpc, load, toValue, toStruct, address, token, metadata, authorize,
  call, violations, run };
