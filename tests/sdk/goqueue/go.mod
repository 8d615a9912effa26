// The official Go SDK's QueueClient against a live eas-server (run by tests/sdk/test_queue_go.py).
// The SDK module comes from the Go module proxy when it serves it; the test driver
// otherwise adds a `replace` directive to a local copy of the official source.
module eas-serving/tests/sdk/goqueue

go 1.22

require github.com/pai-eas/eas-golang-sdk v0.0.0

require (
	github.com/google/uuid v1.3.0 // indirect
	golang.org/x/net v0.0.0-20220722155237-a158d28d115b // indirect
	google.golang.org/protobuf v1.31.0 // indirect
)
