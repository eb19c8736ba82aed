// A Java function on a custom-runtime loop (as on provided.al2023, or java21's runtime API),
// reading through the secretcache extension with java.net.http. No Python anywhere.
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;

public class Handler {
    static final HttpClient HTTP =
            HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
    static final String EXTENSION = "http://127.0.0.1:"
            + System.getenv().getOrDefault("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "2773");

    static String read(String path) throws Exception {
        HttpRequest request = HttpRequest.newBuilder(URI.create(EXTENSION + path))
                .header("X-Aws-Parameters-Secrets-Token", System.getenv("AWS_SESSION_TOKEN"))
                .build();
        HttpResponse<String> response = HTTP.send(request, HttpResponse.BodyHandlers.ofString());
        if (response.statusCode() != 200) {
            throw new IllegalStateException(path + ": HTTP " + response.statusCode());
        }
        return response.body();
    }

    static String handle() throws Exception {
        String secretId = URLEncoder.encode(System.getenv("SECRET_ID"), StandardCharsets.UTF_8);
        String param = URLEncoder.encode(System.getenv("SECURE_PARAM"), StandardCharsets.UTF_8);
        return "{\"secret_response\": " + read("/secretsmanager/get?secretId=" + secretId)
                + ", \"parameter_response\": "
                + read("/systemsmanager/parameters/get?withDecryption=true&name=" + param)
                + ", \"runtime\": \"java " + Runtime.version() + "\"}";
    }

    public static void main(String[] args) throws Exception {
        String api = "http://" + System.getenv("AWS_LAMBDA_RUNTIME_API") + "/2018-06-01/runtime";
        while (true) {
            HttpResponse<String> next = HTTP.send(
                    HttpRequest.newBuilder(URI.create(api + "/invocation/next")).build(),
                    HttpResponse.BodyHandlers.ofString());
            String id = next.headers().firstValue("Lambda-Runtime-Aws-Request-Id").orElseThrow();
            String body;
            String outcome = "response";
            try {
                body = handle();
            } catch (Exception e) {
                outcome = "error";
                body = "{\"errorType\": \"ExtensionCall\", \"errorMessage\": \""
                        + e.getMessage().replace("\"", "'") + "\"}";
            }
            HTTP.send(HttpRequest.newBuilder(URI.create(api + "/invocation/" + id + "/" + outcome))
                            .POST(HttpRequest.BodyPublishers.ofString(body)).build(),
                    HttpResponse.BodyHandlers.discarding());
        }
    }
}
