// loadgen: a closed-loop HTTP load generator for bench/ (stdlib only, keep-alive).
//
// N workers each send POST requests back to back for a fixed duration (or count) and
// record every latency and status. It prints one JSON object: requests, seconds,
// rps, p50/p90/p99/max in ms, and counts by status. Compiled Go, so the load tool is
// not the bottleneck the way a Python client would be.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

type result struct {
	Requests int            `json:"requests"`
	Seconds  float64        `json:"seconds"`
	RPS      float64        `json:"rps"`
	P50      float64        `json:"p50_ms"`
	P90      float64        `json:"p90_ms"`
	P99      float64        `json:"p99_ms"`
	Max      float64        `json:"max_ms"`
	Codes    map[string]int `json:"codes"`
	P99Ok    float64        `json:"p99_ok_ms"`
}

type headerList []string

func (h *headerList) String() string     { return strings.Join(*h, ",") }
func (h *headerList) Set(v string) error { *h = append(*h, v); return nil }

func main() {
	url := flag.String("url", "", "target URL")
	body := flag.String("body", "{}", "request body")
	bodyFile := flag.String("body-file", "", "read the body from this file")
	concurrency := flag.Int("c", 1, "concurrent workers")
	duration := flag.Duration("d", 5*time.Second, "how long to send")
	maxRequests := flag.Int("n", 0, "stop after this many requests (0: no limit)")
	warmup := flag.Duration("warmup", time.Second, "send this long first, unrecorded")
	method := flag.String("method", "POST", "HTTP method (GET and DELETE send no body)")
	rate := flag.Float64("rate", 0, "open loop: send this many requests per second whatever the answers (0: closed loop)")
	var headers headerList
	flag.Var(&headers, "H", "header 'Name: value' (repeatable)")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "loadgen: -url is required")
		os.Exit(2)
	}
	payload := []byte(*body)
	if *bodyFile != "" {
		data, err := os.ReadFile(*bodyFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(2)
		}
		payload = data
	}
	transport := &http.Transport{
		MaxIdleConns:        *concurrency * 2,
		MaxIdleConnsPerHost: *concurrency * 2,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}
	client := &http.Client{Transport: transport, Timeout: 60 * time.Second}
	send := func() (int, time.Duration) {
		var reader io.Reader
		if *method != "GET" && *method != "DELETE" {
			reader = bytes.NewReader(payload)
		}
		req, _ := http.NewRequest(*method, *url, reader)
		for _, h := range headers {
			if k, v, ok := strings.Cut(h, ":"); ok {
				req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
			}
		}
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return -1, time.Since(start)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, time.Since(start)
	}
	run := func(d time.Duration, limit int, record bool) ([]time.Duration, []int, float64) {
		var mu sync.Mutex
		var lat []time.Duration
		var codes []int
		count := 0
		deadline := time.Now().Add(d)
		start := time.Now()
		var wg sync.WaitGroup
		for w := 0; w < *concurrency; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					mu.Lock()
					if limit > 0 && count >= limit {
						mu.Unlock()
						return
					}
					count++
					mu.Unlock()
					code, took := send()
					if record {
						mu.Lock()
						lat = append(lat, took)
						codes = append(codes, code)
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		return lat, codes, time.Since(start).Seconds()
	}
	// Open loop: arrivals at a fixed rate, each on its own goroutine, so a slow server
	// sees the offered load pile up instead of the client slowing down with it.
	openLoop := func(d time.Duration, record bool) ([]time.Duration, []int, float64) {
		var mu sync.Mutex
		var lat []time.Duration
		var codes []int
		var wg sync.WaitGroup
		interval := time.Duration(float64(time.Second) / *rate)
		start := time.Now()
		for i := 0; ; i++ {
			at := start.Add(time.Duration(i) * interval)
			if at.Sub(start) >= d || (*maxRequests > 0 && i >= *maxRequests) {
				break
			}
			time.Sleep(time.Until(at))
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, took := send()
				if record {
					mu.Lock()
					lat = append(lat, took)
					codes = append(codes, code)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		return lat, codes, time.Since(start).Seconds()
	}
	if *rate > 0 {
		transport.MaxIdleConnsPerHost = 1024
		transport.MaxIdleConns = 1024
		run = func(d time.Duration, _ int, record bool) ([]time.Duration, []int, float64) { return openLoop(d, record) }
	}
	if *warmup > 0 {
		run(*warmup, 0, false)
	}
	lat, codes, secs := run(*duration, *maxRequests, true)
	res := result{Requests: len(lat), Seconds: secs, Codes: map[string]int{}}
	var ok []time.Duration
	for i, c := range codes {
		res.Codes[fmt.Sprint(c)]++
		if c == 200 {
			ok = append(ok, lat[i])
		}
	}
	if secs > 0 {
		res.RPS = float64(len(lat)) / secs
	}
	pct := func(xs []time.Duration, p float64) float64 {
		if len(xs) == 0 {
			return 0
		}
		s := append([]time.Duration(nil), xs...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		idx := int(p * float64(len(s)-1))
		return float64(s[idx].Microseconds()) / 1000
	}
	res.P50, res.P90, res.P99 = pct(lat, 0.50), pct(lat, 0.90), pct(lat, 0.99)
	res.Max = pct(lat, 1.0)
	res.P99Ok = pct(ok, 0.99)
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
}
