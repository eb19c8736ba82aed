// A minimal Node.js runtime for the emulator: the Runtime API loop that Lambda's Node.js runtime
// runs (it is what AWS_LAMBDA_EXEC_WRAPPER wraps). Handler from _HANDLER, code in LAMBDA_TASK_ROOT.
"use strict";
const http = require("http");
const path = require("path");

const [host, port] = process.env.AWS_LAMBDA_RUNTIME_API.split(":");
const base = "/2018-06-01/runtime";

function call(method, target, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, method, path: base + target }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () =>
        resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }),
      );
    });
    req.on("error", reject);
    req.end(body);
  });
}

async function main() {
  const [moduleName, functionName] = process.env._HANDLER.split(".");
  let handler;
  try {
    handler = require(path.join(process.env.LAMBDA_TASK_ROOT, moduleName))[functionName];
  } catch (e) {
    await call("POST", "/init/error", JSON.stringify({ errorType: "Runtime.ImportModuleError", errorMessage: e.message }));
    process.exit(1);
  }
  for (;;) {
    const next = await call("GET", "/invocation/next");
    const id = next.headers["lambda-runtime-aws-request-id"];
    try {
      const out = await handler(JSON.parse(next.body), { awsRequestId: id });
      await call("POST", `/invocation/${id}/response`, JSON.stringify(out));
    } catch (e) {
      await call("POST", `/invocation/${id}/error`, JSON.stringify({ errorType: e.name, errorMessage: e.message }));
    }
  }
}

main();
