// Runs full episodes of the echo environment against a Palaestra server, from the .proto files alone:
//
//   node episode.js 127.0.0.1:50051 [--token TOKEN] [--env echo]
//
// One episode on the Session stream (open with options, step until done, close) and one on the
// unary calls (Open, Step, CloseEpisodes); prints one JSON line with what happened and exits 0.
"use strict";

const { connect, toStruct, fromStruct, agentResult, PalaestraError } = require("./palaestra");

function parseArgs(argv) {
  const args = { address: argv[0], env: "echo", token: undefined };
  for (let i = 1; i < argv.length; i += 2) args[argv[i].replace(/^--/, "")] = argv[i + 1];
  if (!args.address) throw new Error("usage: node episode.js HOST:PORT [--token T] [--env ID]");
  return args;
}

// The echo environment asks "Please say the word 'X'."; answer with X.
function reply(messages) {
  for (const m of messages) {
    const match = /say the word '([^']+)'/.exec(m.content);
    if (match) return match[1];
  }
  return "I do not know.";
}

function checkEpisode(result) {
  if (result.error) throw new PalaestraError(result.error.code, result.error.message);
  if (result.infra_failure) throw new Error(`infrastructure failure: ${result.infra_failure.message}`);
  return result;
}

async function streamEpisode(server, envId) {
  const session = server.session();
  try {
    const opened = await session.request({ open: { env_id: envId, seed: "7", options: toStruct({ turns: 3 }) } });
    let result = checkEpisode(opened.episodes[0]);
    const episodeId = result.episode_id;
    const first = agentResult(result);
    const word = reply(first.observation.messages);
    const rewards = [];
    while (!result.done) {
      const stepped = await session.request({
        step: { episodes: [{ episode_id: episodeId, actions: [{ action: { text: `Sure: ${word}` } }] }] },
      });
      result = checkEpisode(stepped.episodes[0]);
      const agent = agentResult(result);
      rewards.push({ reward: agent.reward, components: agent.components.map((c) => [c.name, c.kind, c.value, c.status]) });
    }
    // An in-band error: stepping a finished episode is refused, and the stream goes on.
    const late = await session.request({
      step: { episodes: [{ episode_id: episodeId, actions: [{ action: { text: "again" } }] }] },
    });
    const lateError = late.episodes[0].error;
    const closed = await session.request({ close: { episode_ids: [episodeId] } });
    const summary = closed.summaries[0];
    return {
      episode_id: episodeId,
      word,
      info: fromStruct(first.observation.info),
      rewards,
      step_after_end: lateError ? lateError.code : 0,
      summary: { steps: summary.steps, return: summary.agents[0].episode_return, terminated: summary.terminated },
    };
  } finally {
    session.end();
  }
}

async function unaryEpisode(server, envId) {
  const opened = await server.open({ env_id: envId, seed: "3" });
  const result = checkEpisode(opened.episodes[0]);
  const word = reply(agentResult(result).observation.messages);
  const stepped = await server.step({
    episodes: [{ episode_id: result.episode_id, actions: [{ action: { text: word } }] }],
  });
  const after = checkEpisode(stepped.episodes[0]);
  const closed = await server.closeEpisodes({ episode_ids: [result.episode_id] });
  let unknown = 0;
  try {
    await server.closeEpisodes({ episode_ids: ["no-such-episode"] });
  } catch (error) {
    unknown = error.code; // a whole-call failure is the call's status
  }
  return { reward: agentResult(after).reward, done: after.done, closed: closed.summaries.length, close_unknown: unknown };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const server = connect(args.address, { token: args.token });
  try {
    const info = await server.getServerInfo({});
    const spec = await server.describeEnvironment({ env_id: args.env });
    const stream = await streamEpisode(server, args.env);
    const unary = await unaryEpisode(server, args.env);
    let notFound = 0;
    try {
      await server.describeEnvironment({ env_id: "no/such-env" });
    } catch (error) {
      notFound = error.code;
    }
    // The Struct helpers, both ways through the wire format: what options and info carry.
    const nested = { turns: 3, name: "x", flags: [true, null, 2.5], deep: { list: [{ a: "b" }] } };
    const open = server.v1.definition["palaestra.v1.EnvService"].Open;
    const decoded = open.requestDeserialize(open.requestSerialize({ env_id: "x", options: toStruct(nested) }));
    const structRoundTrip = JSON.stringify(fromStruct(decoded.options)) === JSON.stringify(nested);
    const echo = info.plugins.find((p) => p.name === "echo");
    console.log(
      JSON.stringify({
        protocol: info.protocol_version,
        echo_plugin_state: echo ? echo.state : null,
        env: { id: spec.id, components: spec.reward_components.map((c) => c.name) },
        stream,
        unary,
        describe_unknown: notFound,
        struct_round_trip: structRoundTrip,
      }),
    );
  } finally {
    server.close();
  }
}

main().catch((error) => {
  console.error(error.stack || String(error));
  process.exit(1);
});
