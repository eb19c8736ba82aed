// Returns the environment variables named in the event, as the Node.js runtime started with them.
"use strict";
exports.handler = async (event) =>
  Object.fromEntries(event.names.map((name) => [name, process.env[name] ?? null]));
