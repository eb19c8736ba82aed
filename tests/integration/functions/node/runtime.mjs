// Stand-in for Lambda's Node.js runtime: the Runtime API loop around the function's handler
// (_HANDLER "index.handler" -> index.mjs's export "handler"), as nodejs22.x runs it.
import path from "node:path";
import { pathToFileURL } from "node:url";

const api = `http://${process.env.AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime`;
const [file, name] = process.env._HANDLER.split(".");
const post = (url, body) => fetch(url, { method: "POST", body: JSON.stringify(body) });
const failure = (err) => ({ errorType: err?.name ?? "Error", errorMessage: String(err) });

let handler;
try {
  const module = path.join(process.env.LAMBDA_TASK_ROOT, `${file}.mjs`);
  handler = (await import(pathToFileURL(module).href))[name];
} catch (err) {
  await post(`${api}/init/error`, failure(err));
  process.exit(1);
}
for (;;) {
  const next = await fetch(`${api}/invocation/next`);
  const id = next.headers.get("lambda-runtime-aws-request-id");
  const event = await next.json();
  try {
    await post(`${api}/invocation/${id}/response`, await handler(event, { awsRequestId: id }));
  } catch (err) {
    await post(`${api}/invocation/${id}/error`, failure(err));
  }
}
