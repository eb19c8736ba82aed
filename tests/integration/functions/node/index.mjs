// A Node.js function that reads through the secretcache extension with fetch (no SDK).
const port = process.env.PARAMETERS_SECRETS_EXTENSION_HTTP_PORT ?? "2773";
const base = `http://127.0.0.1:${port}`;
const headers = { "X-Aws-Parameters-Secrets-Token": process.env.AWS_SESSION_TOKEN };

async function call(path, init = {}) {
  const response = await fetch(base + path, { ...init, headers: { ...headers, ...init.headers } });
  if (!response.ok) {
    throw new Error(`${path.split("?")[0]}: HTTP ${response.status} ${await response.text()}`);
  }
  return response.json();
}

export const handler = async () => {
  const q = encodeURIComponent;
  const secret = await call(`/secretsmanager/get?secretId=${q(process.env.SECRET_ID)}`);
  const param = await call(
    `/systemsmanager/parameters/get?name=${q(process.env.SECURE_PARAM)}&withDecryption=true`,
  );
  const decrypted = await call("/kms/decrypt", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ CiphertextBlob: process.env.CIPHERTEXT_B64 }),
  });
  return {
    secret: secret.SecretString,
    secure_string: param.Parameter.Value,
    kms_plaintext: Buffer.from(decrypted.Plaintext, "base64").toString(),
    runtime: `node ${process.version}`,
  };
};
