// Shared by the SDK scripts: what `certroll serve` printed, and the redirect of the Azure host
// names to its loopback listener.
//
// Environment (set by tests/it/serve_dps_hub.rs from serve's JSON start line):
//   CERTROLL_SERVE_ADDR   127.0.0.1:PORT, where every Azure host name is sent
//   CERTROLL_SERVE_CA     the emulator CA's PEM file (the only trust root the scripts use)
//   NODE_PATH             target/node/node_modules
// Each script prints one JSON object on stdout (what it observed) for the Rust test to assert,
// and exits 1 with the error on stderr when an SDK call fails unexpectedly.
'use strict';

const fs = require('fs');
const https = require('https');
const tls = require('tls');

const AZURE_HOSTS = /(\.azure-devices-provisioning\.net|\.azure-devices\.net|\.vault\.azure\.net|^management\.azure\.com)$/i;

function env(name) {
  const v = process.env[name];
  if (!v) {
    throw new Error(`environment variable ${name} is not set`);
  }
  return v;
}

// The SDKs connect to `host:443` through https agents of their own (azure-iothub builds a
// keep-alive agent), so the redirect sits on the agent prototype: the TCP connection goes to the
// emulator while `servername` (SNI) and the Host header keep the Azure name, which is what the
// emulator routes on and what its certificate names.
function redirectAzureHosts() {
  const [addr, port] = env('CERTROLL_SERVE_ADDR').split(':');
  const ca = fs.readFileSync(env('CERTROLL_SERVE_CA'));
  const original = https.Agent.prototype.createConnection;
  https.Agent.prototype.createConnection = function (options, callback) {
    const host = options.servername || options.host || options.hostname;
    if (host && AZURE_HOSTS.test(host)) {
      const redirected = Object.assign({}, options, {
        host: addr,
        port: Number(port),
        servername: host,
        ca,
      });
      return tls.connect(redirected, callback);
    }
    return original.call(this, options, callback);
  };
}

// Runs `main`, prints what it returns as JSON; any throw exits 1 with the error.
function run(main) {
  redirectAzureHosts();
  main().then(
    (out) => {
      // Writes to a pipe are asynchronous: exit once the line is out (the SDKs' keep-alive
      // agents would keep the process alive otherwise).
      process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0));
    },
    (err) => {
      process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
      if (err && err.responseBody) {
        process.stderr.write(`response body: ${err.responseBody}\n`);
      }
      process.exit(1);
    },
  );
}

// The HTTP status of a failed SDK call (the SDKs put the response on the error).
function statusOf(err) {
  if (err && err.response && err.response.statusCode) {
    return err.response.statusCode;
  }
  if (err && err.statusCode) {
    return err.statusCode;
  }
  return null;
}

// Awaits a call expected to fail; returns its HTTP status and error name, or throws if it
// succeeded.
async function failure(promise) {
  try {
    await promise;
  } catch (err) {
    return { status: statusOf(err), name: err && err.constructor ? err.constructor.name : null };
  }
  throw new Error('the call succeeded where a failure was expected');
}

module.exports = { env, run, failure, statusOf };
