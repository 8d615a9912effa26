package eas.sdk;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import com.alibaba.fastjson.JSON;
import com.alibaba.fastjson.JSONObject;
import com.aliyun.openservices.eas.predict.http.HttpConfig;
import com.aliyun.openservices.eas.predict.http.PredictClient;
import com.aliyun.openservices.eas.predict.request.TFDataType;
import com.aliyun.openservices.eas.predict.request.TFRequest;
import com.aliyun.openservices.eas.predict.request.TorchDataType;
import com.aliyun.openservices.eas.predict.request.TorchRequest;
import com.aliyun.openservices.eas.predict.response.TFResponse;
import com.aliyun.openservices.eas.predict.response.TorchResponse;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.zip.Deflater;
import java.util.zip.GZIPOutputStream;
import net.jpountz.lz4.LZ4Factory;
import net.jpountz.lz4.LZ4FrameOutputStream;
import org.junit.After;
import org.junit.BeforeClass;
import org.junit.Test;

/**
 * The official Java SDK, unchanged, against a live eas-server.
 *
 * <p>tests/sdk/test_java_sdk.py starts the server, deploys the services and passes
 * everything in EAS_* environment variables; for the DIRECT-mode test it scales the
 * service when this test writes {@code $EAS_SYNC_DIR/ready} and answers with
 * {@code $EAS_SYNC_DIR/scaled}.
 */
public class OfficialJavaSdkTest {
  private final List<PredictClient> clients = new ArrayList<>();

  private static String env(String name) {
    String value = System.getenv(name);
    if (value == null || value.isEmpty()) {
      throw new IllegalStateException(name + " is not set: run these tests through tests/sdk/test_java_sdk.py");
    }
    return value;
  }

  private static float[] floats(String csv) {
    String[] parts = csv.split(",");
    float[] out = new float[parts.length];
    for (int i = 0; i < parts.length; i++) {
      out[i] = Float.parseFloat(parts[i]);
    }
    return out;
  }

  private static long[] longs(String csv) {
    String[] parts = csv.split(",");
    long[] out = new long[parts.length];
    for (int i = 0; i < parts.length; i++) {
      out[i] = Long.parseLong(parts[i]);
    }
    return out;
  }

  @BeforeClass
  public static void freshDiscoveryCache() throws Exception {
    // The discovery client reloads endpoints it cached on disk by an earlier run: start empty.
    Path home = Files.createDirectories(Paths.get(System.getProperty("user.home")));
    Path cache = Files.createTempDirectory(home, "discovery-cache");
    System.setProperty("com.aliyun.eas.cache.dir", cache.toString());
  }

  @After
  public void shutdown() {
    for (PredictClient client : clients) {
      client.shutdown();
    }
  }

  private PredictClient gateway(String endpoint, String service, String token, int retries) {
    PredictClient client = new PredictClient(new HttpConfig());
    clients.add(client);
    client.setEndpoint(endpoint);
    client.setModelName(service);
    client.setToken(token);
    client.setRetryCount(retries);
    return client;
  }

  private PredictClient echo(int retries) {
    return gateway(env("EAS_ENDPOINT"), env("EAS_ECHO_SERVICE"), env("EAS_ECHO_TOKEN"), retries);
  }

  /** Predict that must fail; returns the status the SDK saw and the message it threw. */
  private static Map.Entry<Integer, String> failure(PredictClient client, byte[] body) {
    try {
      client.predict(body);
    } catch (Exception e) {
      return Map.entry(client.getErrorCode(), String.valueOf(e.getMessage()));
    }
    fail("the call was expected to fail");
    return null;
  }

  @Test
  public void stringPredictIsSigned() throws Exception {
    String body = "hello from java";
    JSONObject answer = JSON.parseObject(echo(0).predict(body));
    assertEquals(body.toUpperCase(), answer.getString("upper"));
    assertEquals(body.getBytes(StandardCharsets.UTF_8).length, answer.getIntValue("length"));
  }

  @Test
  public void bodyWhoseMd5StartsWithZero() throws Exception {
    // The SDK writes Content-MD5 as BigInteger.toString(16): leading zeros dropped.
    java.security.MessageDigest md5 = java.security.MessageDigest.getInstance("MD5");
    String body = null;
    for (int i = 0; i < 1000 && body == null; i++) {
      String candidate = "md5-" + i;
      if (md5.digest(candidate.getBytes(StandardCharsets.UTF_8))[0] >>> 4 == 0) {
        body = candidate;
      }
    }
    assertNotNull(body);
    assertEquals(body.toUpperCase(), JSON.parseObject(echo(0).predict(body)).getString("upper"));
  }

  @Test
  public void contentTypeOtherThanOctetStream() throws Exception {
    // The Java SDK sends the Content-Type it was given but always signs
    // "application/octet-stream" (as the Go SDK does): the gateway must accept that.
    PredictClient client = echo(0);
    client.setContentType("application/json");
    JSONObject answer = JSON.parseObject(client.predict("{\"x\": 1}"));
    assertEquals("{\"X\": 1}", answer.getString("upper"));
  }

  private static void assertClose(String expectedCsv, List<Float> got) {
    float[] expected = floats(expectedCsv);
    assertEquals(expected.length, got.size());
    for (int i = 0; i < expected.length; i++) {
      assertEquals(expected[i], got.get(i), 1e-4 * Math.max(1, Math.abs(expected[i])));
    }
  }

  private static long[] shape(List<Long> dims) {
    return dims.stream().mapToLong(Long::longValue).toArray();
  }

  @Test
  public void tfPredictAgainstOnnx() throws Exception {
    PredictClient client = gateway(env("EAS_ENDPOINT"), env("EAS_ONNX_SERVICE"), env("EAS_ONNX_TOKEN"), 0);
    String input = env("EAS_ONNX_INPUT");
    String output = env("EAS_ONNX_OUTPUT");
    TFRequest request = new TFRequest();
    request.setSignatureName("serving_default");
    request.addFeed(input, TFDataType.DT_FLOAT, longs(env("EAS_ONNX_SHAPE")), floats(env("EAS_ONNX_ROWS")));
    request.addFetch(output);
    TFResponse response = client.predict(request);
    assertClose(env("EAS_ONNX_EXPECTED"), response.getFloatVals(output));
    assertArrayEquals(longs(env("EAS_ONNX_EXPECTED_SHAPE")), shape(response.getTensorShape(output)));
  }

  @Test
  public void tfPredictAgainstTensorflow() throws Exception {
    PredictClient client = gateway(env("EAS_ENDPOINT"), env("EAS_TF_SERVICE"), env("EAS_TF_TOKEN"), 0);
    TFRequest request = new TFRequest();
    request.setSignatureName(env("EAS_TF_SIGNATURE"));
    request.addFeed("x", TFDataType.DT_FLOAT, longs(env("EAS_TF_X_SHAPE")), floats(env("EAS_TF_X")));
    request.addFeed("ids", TFDataType.DT_INT64, longs(env("EAS_TF_IDS_SHAPE")), longs(env("EAS_TF_IDS")));
    request.addFetch(env("EAS_TF_OUTPUT"));
    TFResponse response = client.predict(request);
    assertClose(env("EAS_TF_EXPECTED"), response.getFloatVals(env("EAS_TF_OUTPUT")));
    assertArrayEquals(longs(env("EAS_TF_EXPECTED_SHAPE")), shape(response.getTensorShape(env("EAS_TF_OUTPUT"))));
  }

  @Test
  public void torchPredictAgainstPytorch() throws Exception {
    PredictClient client = gateway(env("EAS_ENDPOINT"), env("EAS_TORCH_SERVICE"), env("EAS_TORCH_TOKEN"), 0);
    TorchRequest request = new TorchRequest();
    request.addFeed(0, TorchDataType.DT_FLOAT, longs(env("EAS_TORCH_X_SHAPE")), floats(env("EAS_TORCH_X")));
    request.addFetch(0);
    TorchResponse response = client.predict(request);
    assertClose(env("EAS_TORCH_EXPECTED"), response.getFloatVals(0));
    assertArrayEquals(longs(env("EAS_TORCH_EXPECTED_SHAPE")), shape(response.getTensorShape(0)));
  }

  @Test
  public void retriesServerErrors() throws Exception {
    String key = UUID.randomUUID().toString().substring(0, 8);
    // Two 500s, then an answer: the SDK's default of 3 retries rides them out.
    JSONObject answer = JSON.parseObject(echo(3).predict("flaky:" + key + ":2"));
    assertEquals(3, answer.getIntValue("attempts"));
  }

  @Test
  public void clearErrors() throws Exception {
    Map.Entry<Integer, String> wrongToken =
        failure(gateway(env("EAS_ENDPOINT"), env("EAS_ECHO_SERVICE"), "not-the-token", 0), "x".getBytes());
    assertEquals(401, (int) wrongToken.getKey());
    assertTrue(wrongToken.getValue(), wrongToken.getValue().contains("signature does not match"));

    Map.Entry<Integer, String> unknown =
        failure(gateway(env("EAS_ENDPOINT"), "no_such_service", env("EAS_ECHO_TOKEN"), 0), "x".getBytes());
    assertEquals(404, (int) unknown.getKey());
    assertTrue(unknown.getValue(), unknown.getValue().contains("'no_such_service' does not exist"));

    PredictClient onnx = gateway(env("EAS_ENDPOINT"), env("EAS_ONNX_SERVICE"), env("EAS_ONNX_TOKEN"), 0);
    Map.Entry<Integer, String> notProto = failure(onnx, "\u0008not a protobuf".getBytes(StandardCharsets.UTF_8));
    assertEquals(400, (int) notProto.getKey());
    assertTrue(notProto.getValue(), notProto.getValue().contains("PredictRequest"));
  }

  @Test
  public void tamperedBodyIsRefused() throws Exception {
    // EAS_TAMPER_ENDPOINT relays to the server flipping one bit of the body after signing.
    PredictClient client = gateway(env("EAS_TAMPER_ENDPOINT"), env("EAS_ECHO_SERVICE"), env("EAS_ECHO_TOKEN"), 0);
    Map.Entry<Integer, String> tampered = failure(client, "sign me".getBytes());
    assertEquals(401, (int) tampered.getKey());
    assertTrue(tampered.getValue(), tampered.getValue().contains("Content-MD5 does not match the body"));
  }

  private static String instanceOf(PredictClient client) throws Exception {
    String instance = JSON.parseObject(client.predict("direct")).getString("instance");
    assertNotNull(instance);
    return instance;
  }

  @Test
  public void directModeSpreadsOverNewInstances() throws Exception {
    PredictClient client = new PredictClient(new HttpConfig());
    clients.add(client);
    client.setDirectEndpoint(env("EAS_DISCOVERY"));
    client.setModelName(env("EAS_DIRECT_SERVICE"));
    client.setToken(env("EAS_DIRECT_TOKEN"));
    Path sync = Paths.get(env("EAS_SYNC_DIR"));

    List<String> before = new ArrayList<>();
    for (int i = 0; i < 10; i++) {
      before.add(instanceOf(client));
    }
    assertEquals("one instance before scaling: " + before, 1, new HashSet<>(before).size());
    Files.write(sync.resolve("ready.tmp"), JSON.toJSONString(before).getBytes(StandardCharsets.UTF_8));
    Files.move(sync.resolve("ready.tmp"), sync.resolve("ready"));

    long waitUntil = System.nanoTime() + 180_000_000_000L;
    while (!Files.exists(sync.resolve("scaled"))) {
      assertTrue("pytest never said the service was scaled", System.nanoTime() < waitUntil);
      Thread.sleep(50);
    }
    long started = System.nanoTime();
    Set<String> seen = new HashSet<>();
    while (seen.size() < 2 && System.nanoTime() - started < 10_000_000_000L) {
      seen.add(instanceOf(client));
      Thread.sleep(20);
    }
    double spreadSeconds = (System.nanoTime() - started) / 1e9;
    assertEquals("calls reached a second instance within 10 s", 2, seen.size());
    Map<String, Integer> after = new HashMap<>();
    for (int i = 0; i < 40; i++) {
      after.merge(instanceOf(client), 1, Integer::sum);
    }
    System.out.printf("DIRECT: second instance answered %.2f s after scaling; then %s%n", spreadSeconds, after);
    assertEquals(after.toString(), 2, after.size());
    for (int count : after.values()) {
      // This SDK picks an instance at random by weight: fewer than 5 of 40 is ~1 run in 5 million.
      assertTrue("calls are shared: " + after, count >= 5);
    }
  }

  // -- compressed bodies --------------------------------------------------------------------
  //
  // The Java SDK 2.0.x's setCompressor (Gzip, Zlib, Snappy, LZ4, LZ4Frame, Zstd) compresses
  // the body with the libraries below, then signs and sends those bytes with no
  // Content-Encoding; metadata.rpc.decompressor names the codec on the service. Maven
  // Central serves eas-sdk 2.0.3, which has no setCompressor: each test makes the same
  // wire bytes with the same library calls and sends them through this SDK's
  // predict(byte[]), which signs them as 2.0.x does. The echo answers what its processor
  // received, so the body must have been decompressed, not passed through.

  private static final String PLAIN = "compressed by the java sdk; ".repeat(100);

  private static byte[] gzip(byte[] data) throws IOException {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    try (GZIPOutputStream gzip = new GZIPOutputStream(out)) {
      gzip.write(data);
    }
    return out.toByteArray();
  }

  private static byte[] zlib(byte[] data) {
    Deflater deflater = new Deflater();
    deflater.setInput(data);
    deflater.finish();
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    byte[] buffer = new byte[1024];
    while (!deflater.finished()) {
      out.write(buffer, 0, deflater.deflate(buffer));
    }
    deflater.end();
    return out.toByteArray();
  }

  private static byte[] lz4Frame(byte[] data) throws IOException {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    try (LZ4FrameOutputStream lz4 = new LZ4FrameOutputStream(out, LZ4FrameOutputStream.BLOCKSIZE.SIZE_64KB, -1L,
        LZ4FrameOutputStream.FLG.Bits.BLOCK_CHECKSUM, LZ4FrameOutputStream.FLG.Bits.CONTENT_CHECKSUM,
        LZ4FrameOutputStream.FLG.Bits.BLOCK_INDEPENDENCE)) {
      lz4.write(data);
    }
    return out.toByteArray();
  }

  private PredictClient compressed(String codec) {
    return gateway(env("EAS_ENDPOINT"), env("EAS_" + codec + "_SERVICE"), env("EAS_" + codec + "_TOKEN"), 0);
  }

  private void assertEchoed(String codec, byte[] wire) throws Exception {
    byte[] plain = PLAIN.getBytes(StandardCharsets.UTF_8);
    JSONObject answer = JSON.parseObject(new String(compressed(codec).predict(wire), StandardCharsets.UTF_8));
    assertEquals(PLAIN.toUpperCase(), answer.getString("upper"));
    assertEquals(plain.length, answer.getIntValue("length"));
  }

  @Test
  public void compressedGzip() throws Exception {
    assertEchoed("GZIP", gzip(PLAIN.getBytes(StandardCharsets.UTF_8)));
  }

  @Test
  public void compressedZlib() throws Exception {
    assertEchoed("GZIP", zlib(PLAIN.getBytes(StandardCharsets.UTF_8)));  // "gzip" reads zlib too
  }

  @Test
  public void compressedSnappy() throws Exception {
    assertEchoed("SNAPPY", org.xerial.snappy.Snappy.compress(PLAIN.getBytes(StandardCharsets.UTF_8)));
  }

  @Test
  public void compressedLz4Block() throws Exception {
    assertEchoed("LZ4", LZ4Factory.fastestInstance().fastCompressor().compress(PLAIN.getBytes(StandardCharsets.UTF_8)));
  }

  @Test
  public void compressedLz4Frame() throws Exception {
    assertEchoed("LZ4", lz4Frame(PLAIN.getBytes(StandardCharsets.UTF_8)));
  }

  @Test
  public void compressedZstd() throws Exception {
    assertEchoed("ZSTD", com.github.luben.zstd.Zstd.compress(PLAIN.getBytes(StandardCharsets.UTF_8)));
  }

  @Test
  public void decompressionBombIs413() throws Exception {
    // (limit + 1 MiB) of zeros, about 65 KiB as zstd, refused while it inflates.
    byte[] bomb = com.github.luben.zstd.Zstd.compress(new byte[Integer.parseInt(env("EAS_BODY_LIMIT")) + (1 << 20)]);
    Map.Entry<Integer, String> refused = failure(compressed("ZSTD"), bomb);
    assertEquals(413, (int) refused.getKey());
    assertTrue(refused.getValue(), refused.getValue().contains("decompresses to more than"));
  }
}
