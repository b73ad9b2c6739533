// A small Palaestra client for Node.js, built from the .proto files alone (protos/ in this repository):
// @grpc/proto-loader reads them at run time, @grpc/grpc-js speaks gRPC. No generated code.
//
//   const { connect, toStruct, fromStruct } = require("./palaestra");
//   const server = connect("127.0.0.1:50051", { token: "..." });
//   const session = server.session();            // one bidirectional Session stream, many episodes
//   const opened = await session.request({ open: { env_id: "echo", seed: 7 } });
"use strict";

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

// protos/ holds palaestra/v1/*.proto and google/rpc/status.proto; the google/protobuf well-known types
// come with protobuf.js. PALAESTRA_PROTOS points elsewhere (e.g. a copy of protos/ in your project).
const PROTOS = process.env.PALAESTRA_PROTOS || path.resolve(__dirname, "..", "..", "protos");

function loadPackage(protosDir = PROTOS) {
  const definition = protoLoader.loadSync(
    ["palaestra/v1/catalog.proto", "palaestra/v1/env.proto"].map((f) => path.join(protosDir, f)),
    {
      includeDirs: [protosDir],
      keepCase: true, // field names exactly as in the .proto files (env_id, episode_id)
      longs: String, // int64 (seeds, shapes) as decimal strings: JavaScript numbers lose precision
      enums: String, // enum values by name ("REWARD_KIND_OUTCOME")
      defaults: true, // absent scalar fields read as their defaults
      oneofs: true, // a oneof's chosen field name in e.g. response.response ("open", "step", "error")
    },
  );
  // protobuf.js brings its own google/protobuf/struct.proto, whose field names are camelCase
  // (numberValue) whatever keepCase says; a struct.proto found on disk keeps snake_case. Follow the one used.
  const valueFields = definition["google.protobuf.Value"].type.field.map((f) => f.name);
  VALUE = valueFields.includes("numberValue") ? CAMEL : SNAKE;
  const v1 = grpc.loadPackageDefinition(definition).palaestra.v1;
  v1.definition = definition; // message (de)serializers, e.g. definition["palaestra.v1.EnvService"].Open
  return v1;
}

// ---------------------------------------------------------------- google.protobuf.Struct

// The field names of google.protobuf.Value's oneof `kind`, as the loaded definition spells them.
const SNAKE = { null: "null_value", number: "number_value", string: "string_value", bool: "bool_value", struct: "struct_value", list: "list_value" };
const CAMEL = { null: "nullValue", number: "numberValue", string: "stringValue", bool: "boolValue", struct: "structValue", list: "listValue" };
let VALUE = CAMEL;

// A plain JSON value -> google.protobuf.Value.
function toValue(value) {
  if (value === null || value === undefined) return { [VALUE.null]: "NULL_VALUE" };
  if (typeof value === "number") return { [VALUE.number]: value };
  if (typeof value === "string") return { [VALUE.string]: value };
  if (typeof value === "boolean") return { [VALUE.bool]: value };
  if (Array.isArray(value)) return { [VALUE.list]: { values: value.map(toValue) } };
  if (typeof value === "object") return { [VALUE.struct]: toStruct(value) };
  throw new TypeError(`cannot put a ${typeof value} into a google.protobuf.Struct`);
}

// A plain object -> google.protobuf.Struct (open options, reset options).
function toStruct(object) {
  const fields = {};
  for (const [key, value] of Object.entries(object || {})) fields[key] = toValue(value);
  return { fields };
}

// google.protobuf.Value -> a plain JSON value. Struct numbers are doubles: integers arrive as numbers
// (the server restores integer options for environments that declare them in options_schema).
function fromValue(value) {
  if (!value) return null;
  switch (value.kind) {
    case VALUE.number:
    case VALUE.string:
    case VALUE.bool:
      return value[value.kind];
    case VALUE.struct:
      return fromStruct(value[VALUE.struct]);
    case VALUE.list:
      return (value[VALUE.list].values || []).map(fromValue);
    default:
      return null; // null_value, or no kind set
  }
}

// google.protobuf.Struct -> a plain object (observation info, agent info).
function fromStruct(struct) {
  const out = {};
  for (const [key, value] of Object.entries((struct && struct.fields) || {})) out[key] = fromValue(value);
  return out;
}

// ---------------------------------------------------------------- errors

// A call or in-band error: code is the gRPC status code number (3 INVALID_ARGUMENT, 5 NOT_FOUND, ...).
class PalaestraError extends Error {
  constructor(code, message) {
    super(`${grpc.status[code] || code}: ${message}`);
    this.code = code;
  }
}

// ---------------------------------------------------------------- the client

// The only metadata the server reads (docs/protocol.md).
function metadataFor({ token } = {}) {
  const metadata = new grpc.Metadata();
  if (token) metadata.set("authorization", `Bearer ${token}`);
  return metadata;
}

function connect(address, { token, rootCert, protosDir } = {}) {
  const v1 = loadPackage(protosDir);
  const credentials = rootCert ? grpc.credentials.createSsl(rootCert) : grpc.credentials.createInsecure();
  const catalog = new v1.EnvCatalog(address, credentials);
  const env = new v1.EnvService(address, credentials);
  const metadata = () => metadataFor({ token });

  // Unary calls as promises; a failed call rejects with PalaestraError.
  const unary = (stub, method) => (request) =>
    new Promise((resolve, reject) => {
      stub[method](request, metadata(), (error, response) =>
        error ? reject(new PalaestraError(error.code, error.details)) : resolve(response),
      );
    });

  return {
    v1,
    listEnvironments: unary(catalog, "ListEnvironments"),
    describeEnvironment: unary(catalog, "DescribeEnvironment"),
    getServerInfo: unary(catalog, "GetServerInfo"),
    open: unary(env, "Open"),
    reset: unary(env, "Reset"),
    step: unary(env, "Step"),
    closeEpisodes: unary(env, "CloseEpisodes"),

    // The Session stream: request(body) sends {request_id, ...body} and resolves with the reply's
    // body (open/reset/step/close), or rejects when the reply carries an in-band error.
    session() {
      const call = env.Session(metadata());
      const pending = new Map();
      let next = 1;
      call.on("data", (reply) => {
        const waiter = pending.get(reply.request_id);
        if (!waiter) return;
        pending.delete(reply.request_id);
        if (reply.response === "error") waiter.reject(new PalaestraError(reply.error.code, reply.error.message));
        else waiter.resolve(reply[reply.response]);
      });
      const failAll = (error) => {
        for (const waiter of pending.values()) waiter.reject(error);
        pending.clear();
      };
      call.on("error", (error) => failAll(new PalaestraError(error.code, error.details)));
      call.on("end", () => failAll(new PalaestraError(grpc.status.CANCELLED, "the stream ended")));
      return {
        request(body) {
          const request_id = String(next++);
          return new Promise((resolve, reject) => {
            pending.set(request_id, { resolve, reject });
            call.write({ request_id, ...body });
          });
        },
        end() {
          call.end();
        },
      };
    },

    close() {
      catalog.close();
      env.close();
    },
  };
}

// An episode result's single agent, or the named one.
function agentResult(episodeResult, agent) {
  const agents = episodeResult.agents || [];
  return agent ? agents.find((a) => a.agent === agent) : agents[0];
}

module.exports = { connect, loadPackage, toStruct, fromStruct, toValue, fromValue, agentResult, PalaestraError };
