// The official Go SDK's QueueClient (github.com/pai-eas/eas-golang-sdk), unchanged,
// against an Async service of a live eas-server. tests/sdk/test_queue_go.py starts the
// server, deploys the service and passes EAS_ENDPOINT (http://host:port: the Go
// QueueClient parses it as a URL), EAS_QUEUE_SERVICE and EAS_QUEUE_TOKEN.
package queuetest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/pai-eas/eas-golang-sdk/eas"
	"github.com/pai-eas/eas-golang-sdk/eas/types"
)

func env(t *testing.T, name string) string {
	value := os.Getenv(name)
	if value == "" {
		t.Fatalf("%s is not set: run these tests through tests/sdk/test_queue_go.py", name)
	}
	return value
}

func queues(t *testing.T) (*eas.QueueClient, *eas.QueueClient) {
	endpoint, name, token := env(t, "EAS_ENDPOINT"), env(t, "EAS_QUEUE_SERVICE"), env(t, "EAS_QUEUE_TOKEN")
	input, err := eas.NewQueueClient(endpoint, name, token)
	if err != nil {
		t.Fatal(err)
	}
	sink, err := eas.NewQueueClient(endpoint, name+"/sink", token)
	if err != nil {
		t.Fatal(err)
	}
	return input, sink
}

func length(t *testing.T, q *eas.QueueClient) string {
	attrs, err := q.Attributes()
	if err != nil {
		t.Fatal(err)
	}
	return attrs[types.StreamLength]
}

// waitLength polls the attributes until the queue holds `want` entries (commits are
// separate requests: the last may land just after the watcher saw its frame).
func waitLength(t *testing.T, q *eas.QueueClient, want string) {
	deadline := time.Now().Add(10 * time.Second)
	for length(t, q) != want {
		if time.Now().After(deadline) {
			t.Fatalf("queue length %s, want %s", length(t, q), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// frames reads n frames from a watcher, handing each to `each` as it comes (a commit
// there frees its place in the watch window).
func frames(t *testing.T, w types.Watcher, n int, each func(types.DataFrame)) []types.DataFrame {
	var out []types.DataFrame
	timeout := time.After(60 * time.Second)
	for len(out) < n {
		select {
		case df, ok := <-w.FrameChan():
			if !ok {
				t.Fatalf("watcher closed after %d frames", len(out))
			}
			if df.Message != "" && len(df.Data) == 0 && df.Index == 0 {
				t.Fatalf("watcher error: %s", df.Message)
			}
			out = append(out, df)
			each(df)
		case <-timeout:
			t.Fatalf("only %d of %d frames within 60 s", len(out), n)
		}
	}
	return out
}

// Requests put on the input queue are answered by the service onto the sink, with
// their tags and request id; a watcher that commits each leaves both queues empty.
func TestQueueAnswersReachTheSink(t *testing.T) {
	input, sink := queues(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ids := map[string]int{}
	for i := 0; i < 10; i++ {
		index, rid, err := input.Put(ctx, []byte(fmt.Sprintf("go-%d", i)), types.Tags{"n": fmt.Sprint(i)})
		if err != nil || index == 0 || rid == "" {
			t.Fatalf("put: %d %q %v", index, rid, err)
		}
		ids[rid] = i
	}
	watcher, err := sink.Watch(ctx, 0, 5, false, false)
	if err != nil {
		t.Fatal(err)
	}
	frames(t, watcher, 10, func(df types.DataFrame) {
		n, ok := ids[df.Tags["requestId"]]
		if !ok || df.Tags["n"] != fmt.Sprint(n) || df.Tags["status"] != "200" {
			t.Fatalf("unexpected frame %v", df.Tags)
		}
		var answer map[string]any
		if err := json.Unmarshal(df.Data, &answer); err != nil || answer["upper"] != fmt.Sprintf("GO-%d", n) {
			t.Fatalf("answer %s: %v", df.Data, err)
		}
		delete(ids, df.Tags["requestId"])
		if err := sink.Commit(ctx, df.Index.Uint64()); err != nil {
			t.Fatal(err)
		}
	})
	watcher.Close()
	if len(ids) != 0 {
		t.Fatalf("not answered: %v", ids)
	}
	waitLength(t, sink, "0")
	waitLength(t, input, "0")
}

// Get by request id and by index, delete, truncate, priority and auto-commit on the sink.
func TestQueueOperations(t *testing.T) {
	_, sink := queues(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, rid, err := sink.Put(ctx, []byte("abc"), types.Tags{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := sink.GetByRequestId(ctx, rid)
	if err != nil || len(got) != 1 || string(got[0].Data) != "abc" {
		t.Fatalf("get by request id: %v %v", got, err)
	}
	index, _, err := sink.Put(ctx, []byte("def"), types.Tags{})
	if err != nil {
		t.Fatal(err)
	}
	got, err = sink.GetByIndex(ctx, index)
	if err != nil || len(got) != 1 || string(got[0].Data) != "def" || got[0].Index.Uint64() != index {
		t.Fatalf("get by index: %v %v", got, err)
	}
	first, _, _ := sink.Put(ctx, []byte("x"), types.Tags{})
	last, _, _ := sink.Put(ctx, []byte("y"), types.Tags{})
	if err := sink.Del(ctx, first); err != nil {
		t.Fatal(err)
	}
	if l := length(t, sink); l != "1" {
		t.Fatalf("length after delete: %s", l)
	}
	if err := sink.Truncate(ctx, last+1); err != nil {
		t.Fatal(err)
	}
	if l := length(t, sink); l != "0" {
		t.Fatalf("length after truncate: %s", l)
	}
	if _, _, err := sink.Put(ctx, []byte("low"), types.Tags{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := sink.PutWithPriority(ctx, []byte("high"), types.Tags{}, 1); err != nil {
		t.Fatal(err)
	}
	watcher, err := sink.Watch(ctx, 0, 5, false, true)
	if err != nil {
		t.Fatal(err)
	}
	seen := frames(t, watcher, 2, func(types.DataFrame) {})
	watcher.Close()
	if string(seen[0].Data) != "high" || string(seen[1].Data) != "low" {
		t.Fatalf("priority first: got %s, %s", seen[0].Data, seen[1].Data)
	}
	waitLength(t, sink, "0")
}

// The watch over plain HTTP (WebsocketWatch = false): length-delimited frames.
func TestQueueHttpWatch(t *testing.T) {
	_, sink := queues(t)
	sink.WebsocketWatch = false
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < 3; i++ {
		if _, _, err := sink.Put(ctx, []byte(fmt.Sprintf("http-%d", i)), types.Tags{}); err != nil {
			t.Fatal(err)
		}
	}
	watcher, err := sink.Watch(ctx, 0, 5, false, true)
	if err != nil {
		t.Fatal(err)
	}
	seen := frames(t, watcher, 3, func(types.DataFrame) {})
	watcher.Close()
	for i, df := range seen {
		if string(df.Data) != fmt.Sprintf("http-%d", i) {
			t.Fatalf("frame %d: %s", i, df.Data)
		}
	}
	waitLength(t, sink, "0")
}
