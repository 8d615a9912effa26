// The official Go SDK (github.com/pai-eas/eas-golang-sdk), unchanged, against a live
// eas-server. tests/sdk/test_go_sdk.py starts the server, deploys the services and
// passes everything in EAS_* environment variables; for the DIRECT-mode test it scales
// the service when this test writes $EAS_SYNC_DIR/ready and answers with
// $EAS_SYNC_DIR/scaled.
package sdktest

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pai-eas/eas-golang-sdk/eas"
)

func env(t *testing.T, name string) string {
	value := os.Getenv(name)
	if value == "" {
		t.Fatalf("%s is not set: run these tests through tests/sdk/test_go_sdk.py", name)
	}
	return value
}

func floats(t *testing.T, name string) []float32 {
	var out []float32
	for _, part := range strings.Split(env(t, name), ",") {
		v, err := strconv.ParseFloat(part, 64)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out = append(out, float32(v))
	}
	return out
}

func longs(t *testing.T, name string) []int64 {
	var out []int64
	for _, part := range strings.Split(env(t, name), ",") {
		v, err := strconv.ParseInt(part, 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out = append(out, v)
	}
	return out
}

func client(t *testing.T, endpoint, service, token string, retries int) *eas.PredictClient {
	c := eas.NewPredictClient(endpoint, service)
	c.SetToken(token)
	c.SetRetryCount(retries)
	c.SetTimeout(30000)
	if err := c.Init(); err != nil {
		t.Fatal(err)
	}
	return c
}

func echo(t *testing.T, retries int) *eas.PredictClient {
	return client(t, env(t, "EAS_ENDPOINT"), env(t, "EAS_ECHO_SERVICE"), env(t, "EAS_ECHO_TOKEN"), retries)
}

func decode(t *testing.T, text string) map[string]interface{} {
	out := map[string]interface{}{}
	if err := json.Unmarshal([]byte(text), &out); err != nil {
		t.Fatalf("answer is not JSON: %q (%v)", text, err)
	}
	return out
}

// failure makes a call that must fail; returns the status the SDK saw and its message.
func failure(t *testing.T, c *eas.PredictClient, body string) (int, string) {
	_, err := c.StringPredict(body)
	if err == nil {
		t.Fatalf("the call with %q was expected to fail", body)
	}
	perr, ok := err.(*eas.PredictError)
	if !ok {
		t.Fatalf("unexpected error type %T: %v", err, err)
	}
	return perr.Code, perr.Message
}

func assertClose(t *testing.T, expected, got []float32) {
	if len(expected) != len(got) {
		t.Fatalf("expected %d values, got %d: %v", len(expected), len(got), got)
	}
	for i := range expected {
		if math.Abs(float64(expected[i]-got[i])) > 1e-4*math.Max(1, math.Abs(float64(expected[i]))) {
			t.Fatalf("value %d: expected %v, got %v", i, expected[i], got[i])
		}
	}
}

func assertShape(t *testing.T, expected, got []int64) {
	if fmt.Sprint(expected) != fmt.Sprint(got) {
		t.Fatalf("shape: expected %v, got %v", expected, got)
	}
}

func TestStringPredictIsSigned(t *testing.T) {
	body := "hello from go"
	out, err := echo(t, 0).StringPredict(body)
	if err != nil {
		t.Fatal(err)
	}
	answer := decode(t, out)
	if answer["upper"] != strings.ToUpper(body) || answer["length"] != float64(len(body)) {
		t.Fatalf("unexpected answer %v", answer)
	}
}

func TestTFPredictAgainstOnnx(t *testing.T) {
	c := client(t, env(t, "EAS_ENDPOINT"), env(t, "EAS_ONNX_SERVICE"), env(t, "EAS_ONNX_TOKEN"), 0)
	input, output := env(t, "EAS_ONNX_INPUT"), env(t, "EAS_ONNX_OUTPUT")
	request := eas.TFRequest{}
	request.SetSignatureName("serving_default")
	request.AddFeedFloat32(input, longs(t, "EAS_ONNX_SHAPE"), floats(t, "EAS_ONNX_ROWS"))
	request.AddFetch(output)
	response, err := c.TFPredict(request)
	if err != nil {
		t.Fatal(err)
	}
	assertClose(t, floats(t, "EAS_ONNX_EXPECTED"), response.GetFloatVal(output))
	assertShape(t, longs(t, "EAS_ONNX_EXPECTED_SHAPE"), response.GetTensorShape(output))
}

func TestTFPredictAgainstTensorflow(t *testing.T) {
	c := client(t, env(t, "EAS_ENDPOINT"), env(t, "EAS_TF_SERVICE"), env(t, "EAS_TF_TOKEN"), 0)
	request := eas.TFRequest{}
	request.SetSignatureName(env(t, "EAS_TF_SIGNATURE"))
	request.AddFeedFloat32("x", longs(t, "EAS_TF_X_SHAPE"), floats(t, "EAS_TF_X"))
	request.AddFeedInt64("ids", longs(t, "EAS_TF_IDS_SHAPE"), longs(t, "EAS_TF_IDS"))
	output := env(t, "EAS_TF_OUTPUT")
	request.AddFetch(output)
	response, err := c.TFPredict(request)
	if err != nil {
		t.Fatal(err)
	}
	assertClose(t, floats(t, "EAS_TF_EXPECTED"), response.GetFloatVal(output))
	assertShape(t, longs(t, "EAS_TF_EXPECTED_SHAPE"), response.GetTensorShape(output))
}

func TestTorchPredictAgainstPytorch(t *testing.T) {
	c := client(t, env(t, "EAS_ENDPOINT"), env(t, "EAS_TORCH_SERVICE"), env(t, "EAS_TORCH_TOKEN"), 0)
	request := eas.TorchRequest{}
	request.AddFeedFloat32(0, longs(t, "EAS_TORCH_X_SHAPE"), floats(t, "EAS_TORCH_X"))
	request.AddFetch(0)
	response, err := c.TorchPredict(request)
	if err != nil {
		t.Fatal(err)
	}
	assertClose(t, floats(t, "EAS_TORCH_EXPECTED"), response.GetFloatVal(0))
	assertShape(t, longs(t, "EAS_TORCH_EXPECTED_SHAPE"), response.GetTensorShape(0))
}

func TestRetriesServerErrors(t *testing.T) {
	key := fmt.Sprintf("go-%d", time.Now().UnixNano())
	// Two 500s, then an answer: the Go SDK retries every failure.
	out, err := echo(t, 3).StringPredict("flaky:" + key + ":2")
	if err != nil {
		t.Fatal(err)
	}
	if attempts := decode(t, out)["attempts"]; attempts != float64(3) {
		t.Fatalf("expected 3 attempts, got %v", attempts)
	}
}

func TestClearErrors(t *testing.T) {
	code, message := failure(t, client(t, env(t, "EAS_ENDPOINT"), env(t, "EAS_ECHO_SERVICE"), "not-the-token", 0), "x")
	if code != 401 || !strings.Contains(message, "signature does not match") {
		t.Fatalf("wrong token: %d %s", code, message)
	}
	code, message = failure(t, client(t, env(t, "EAS_ENDPOINT"), "no_such_service", env(t, "EAS_ECHO_TOKEN"), 0), "x")
	if code != 404 || !strings.Contains(message, "'no_such_service' does not exist") {
		t.Fatalf("unknown service: %d %s", code, message)
	}
	onnx := client(t, env(t, "EAS_ENDPOINT"), env(t, "EAS_ONNX_SERVICE"), env(t, "EAS_ONNX_TOKEN"), 0)
	code, message = failure(t, onnx, "\bnot a protobuf")
	if code != 400 || !strings.Contains(message, "PredictRequest") {
		t.Fatalf("not a protobuf: %d %s", code, message)
	}
}

func TestTamperedBodyIsRefused(t *testing.T) {
	// EAS_TAMPER_ENDPOINT relays to the server flipping one bit of the body after signing.
	c := client(t, env(t, "EAS_TAMPER_ENDPOINT"), env(t, "EAS_ECHO_SERVICE"), env(t, "EAS_ECHO_TOKEN"), 0)
	code, message := failure(t, c, "sign me")
	if code != 401 || !strings.Contains(message, "Content-MD5 does not match the body") {
		t.Fatalf("tampered: %d %s", code, message)
	}
}

func instanceOf(t *testing.T, c *eas.PredictClient) string {
	out, err := c.StringPredict("direct")
	if err != nil {
		t.Fatal(err)
	}
	instance, _ := decode(t, out)["instance"].(string)
	if instance == "" {
		t.Fatalf("no instance in %q", out)
	}
	return instance
}

func TestDirectModeSpreadsOverNewInstances(t *testing.T) {
	c := eas.NewPredictClient(env(t, "EAS_DISCOVERY"), env(t, "EAS_DIRECT_SERVICE"))
	c.SetEndpointType(eas.EndpointTypeDirect)
	c.SetToken(env(t, "EAS_DIRECT_TOKEN"))
	c.SetTimeout(30000)
	if err := c.Init(); err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown()
	sync := env(t, "EAS_SYNC_DIR")

	// The SDK reads the instance list in the background: the first calls may find none yet.
	var before []string
	deadline := time.Now().Add(30 * time.Second)
	for len(before) < 10 {
		out, err := c.StringPredict("direct")
		if err != nil {
			if time.Now().After(deadline) {
				t.Fatalf("no answer in DIRECT mode: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		instance, _ := decode(t, out)["instance"].(string)
		before = append(before, instance)
	}
	report, _ := json.Marshal(before)
	os.WriteFile(filepath.Join(sync, "ready.tmp"), report, 0o644)
	os.Rename(filepath.Join(sync, "ready.tmp"), filepath.Join(sync, "ready"))
	for deadline := time.Now().Add(180 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(sync, "scaled")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the service was not scaled to 2 instances")
		}
	}
	scaled := time.Now()
	seen := map[string]bool{}
	var untilSpread []string
	for len(seen) < 2 && time.Since(scaled) < 20*time.Second {
		instance := instanceOf(t, c)
		seen[instance] = true
		untilSpread = append(untilSpread, instance)
	}
	spread := time.Since(scaled).Seconds()
	var after []string
	for i := 0; i < 40; i++ {
		after = append(after, instanceOf(t, c))
	}
	result, _ := json.Marshal(map[string]interface{}{"ok": true, "before": before, "until_spread": untilSpread,
		"spread_s": spread, "after": after})
	os.WriteFile(filepath.Join(sync, "result.json"), result, 0o644)
}

// The Go SDK's compressors (SetCompressType): the body is compressed and signed as sent,
// with no Content-Encoding; the service's metadata.rpc.decompressor ("gzip", which reads
// zlib too) undoes it before the processor, whose echo proves what it received.
func TestCompressedGzipAndZlib(t *testing.T) {
	for _, compressType := range []string{eas.CompressTypeGzip, eas.CompressTypeZlib} {
		c := client(t, env(t, "EAS_ENDPOINT"), env(t, "EAS_GZIP_SERVICE"), env(t, "EAS_GZIP_TOKEN"), 0)
		c.SetCompressType(compressType)
		body := strings.Repeat("compressed by the go sdk with "+compressType+"; ", 100)
		out, err := c.StringPredict(body)
		if err != nil {
			t.Fatalf("%s: %v", compressType, err)
		}
		answer := decode(t, out)
		if answer["upper"] != strings.ToUpper(body) || answer["length"] != float64(len(body)) {
			t.Fatalf("%s: the processor did not see the decompressed body: %v", compressType, answer)
		}
	}
}

// A body that inflates past the service's body limit is refused with 413 while it
// inflates: the SDK compresses (limit + 1 MiB) of zeros into about 65 KiB.
func TestDecompressionBombIs413(t *testing.T) {
	limit, err := strconv.Atoi(env(t, "EAS_BODY_LIMIT"))
	if err != nil {
		t.Fatal(err)
	}
	c := client(t, env(t, "EAS_ENDPOINT"), env(t, "EAS_GZIP_SERVICE"), env(t, "EAS_GZIP_TOKEN"), 0)
	c.SetCompressType(eas.CompressTypeGzip)
	_, err = c.BytesPredict(make([]byte, limit+1<<20))
	perr, ok := err.(*eas.PredictError)
	if !ok || perr.Code != 413 || !strings.Contains(perr.Message, "decompresses to more than") {
		t.Fatalf("expected a 413 for the bomb, got %v", err)
	}
}
