// Example Node.js function (nodejs20.x / nodejs22.x): reads a Secrets Manager secret, an SSM
// SecureString and a KMS ciphertext through the secretcache extension with plain fetch, and
// reports them masked (never the values themselves). Configuration as in app.py.
const port = process.env.PARAMETERS_SECRETS_EXTENSION_HTTP_PORT ?? "2773";
const base = `http://127.0.0.1:${port}`;
// Lambda's session token proves the caller runs inside this function's sandbox.
const headers = { "X-Aws-Parameters-Secrets-Token": process.env.AWS_SESSION_TOKEN };

async function call(path, init = {}) {
  const response = await fetch(base + path, { ...init, headers: { ...headers, ...init.headers } });
  const body = await response.json();
  if (!response.ok) {
    // secretcache answers errors with a JSON body naming the problem (never a secret).
    throw new Error(`${path.split("?")[0]}: HTTP ${response.status}: ${body.message}`);
  }
  return body;
}

const mask = (value) => `******** (${typeof value === "string" ? "str" : "bytes"}, ${value.length} chars)`;

async function readAll() {
  const started = performance.now();
  const q = encodeURIComponent;
  const secret = await call(`/secretsmanager/get?secretId=${q(process.env.SECRET_ID)}`);
  const parameter = await call(
    `/systemsmanager/parameters/get?name=${q(process.env.PARAMETER_NAME)}&withDecryption=true`,
  );
  const request = { CiphertextBlob: process.env.CIPHERTEXT_B64 };
  if (process.env.KMS_KEY_ID) request.KeyId = process.env.KMS_KEY_ID;
  const decrypted = await call("/kms/decrypt", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(request),
  });
  return {
    secret: mask(secret.SecretString),
    secure_string: mask(parameter.Parameter.Value),
    kms_plaintext: mask(Buffer.from(decrypted.Plaintext, "base64")),
    read_ms: Math.round((performance.now() - started) * 100) / 100,
  };
}

// Read once during INIT too (top-level await): the extension already serves then.
console.log({ phase: "init", ...(await readAll()) });

export const handler = async () => {
  const result = { phase: "invoke", ...(await readAll()) };
  console.log(result);
  return result;
};
