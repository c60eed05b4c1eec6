// Package jaegertest starts and stops a real Jaeger (v2 all-in-one,
// in-memory storage) on free loopback ports, for integration tests and
// the demo, and reads traces back through its query HTTP API. The binary
// comes from $JAEGER_BIN or bin/jaeger (built by `make tools-jaeger`).
//
// Jaeger built from its Go module has no UI assets (its UI page is a
// placeholder); the query API (/api/services, /api/traces) is complete,
// which is what tests and `medmesh` docs rely on.
package jaegertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"medmesh/internal/toolbin"
)

// ErrNoBinary means no Jaeger binary was found.
var ErrNoBinary = errors.New("jaeger binary not found: run `make tools` (or `make tools-jaeger`) or set JAEGER_BIN")

// Jaeger is a running Jaeger all-in-one.
type Jaeger struct {
	Bin string
	// OTLPGRPC and OTLPHTTP receive spans; Query serves the query API.
	OTLPGRPC, OTLPHTTP, Query int
	queryGRPC                 int
	dir, LogPath              string
	cmd                       *exec.Cmd
	done                      chan error
}

// FindBinary locates the Jaeger binary: $JAEGER_BIN, else bin/jaeger in
// the working directory or one of its parents (the module root), else
// PATH.
func FindBinary() (string, error) {
	if p, ok := toolbin.Find("JAEGER_BIN", "jaeger"); ok {
		return p, nil
	}
	return "", ErrNoBinary
}

// config is the all-in-one pipeline of Jaeger's own default config
// (cmd/jaeger/internal/all-in-one.yaml) cut to what tests use, on ports
// of our choosing: Jaeger's defaults (4317, 4318, 16686, 8888, ...) are
// fixed, and tests and demos run side by side. Its own metrics are off
// (they would take port 8888).
const config = `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:%d
    grpc:
      endpoint: 127.0.0.1:%d
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:%d
      http:
        endpoint: 127.0.0.1:%d
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`

// Start runs Jaeger with its config and log in dir and waits until its
// query API answers. Free ports are found by binding and releasing them,
// so another process can take one in between: Start then retries on
// fresh ports.
func Start(ctx context.Context, dir string) (*Jaeger, error) {
	bin, err := FindBinary()
	if err != nil {
		return nil, err
	}
	j := &Jaeger{Bin: bin, dir: dir, LogPath: filepath.Join(dir, "jaeger.log")}
	for attempt := 0; ; attempt++ {
		err = j.start(ctx)
		if err == nil || !errors.Is(err, errPortTaken) || attempt == 2 {
			return j, err
		}
	}
}

var errPortTaken = errors.New("jaeger could not bind a port")

func (j *Jaeger) start(ctx context.Context) error {
	for _, p := range []*int{&j.OTLPGRPC, &j.OTLPHTTP, &j.Query, &j.queryGRPC} {
		var err error
		if *p, err = freePort(); err != nil {
			return err
		}
	}
	cfg := filepath.Join(j.dir, "jaeger.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, config, j.Query, j.queryGRPC, j.OTLPGRPC, j.OTLPHTTP), 0o600); err != nil {
		return err
	}
	logf, err := os.OpenFile(j.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	j.cmd = exec.Command(j.Bin, "--config", cfg)
	j.cmd.Stdout, j.cmd.Stderr = logf, logf
	// Its own process group: a terminal's Ctrl-C reaches the owner, which
	// stops Jaeger last. Pdeathsig: a killed owner never leaves it running.
	j.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := j.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting jaeger: %w", err)
	}
	j.done = make(chan error, 1)
	go func() { j.done <- j.cmd.Wait(); logf.Close() }()
	return j.waitReady(ctx)
}

func (j *Jaeger) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		if _, err := j.Services(ctx); err == nil {
			return nil
		}
		select {
		case err := <-j.done:
			j.cmd = nil
			tail, _ := os.ReadFile(j.LogPath)
			if len(tail) > 2000 {
				tail = tail[len(tail)-2000:]
			}
			if strings.Contains(string(tail), "address already in use") {
				return fmt.Errorf("%w: %s", errPortTaken, tail)
			}
			return fmt.Errorf("jaeger exited before it was ready (%v); log %s:\n%s", err, j.LogPath, tail)
		case <-ctx.Done():
			return fmt.Errorf("jaeger not ready after 60s (log: %s)", j.LogPath)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop stops Jaeger and waits for it to exit.
func (j *Jaeger) Stop() {
	if j == nil || j.cmd == nil || j.cmd.Process == nil {
		return
	}
	_ = j.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-j.done:
	case <-time.After(10 * time.Second):
		_ = j.cmd.Process.Kill()
		<-j.done
	}
	j.cmd = nil
}

// OTLPEndpoint is the value for OTEL_EXPORTER_OTLP_ENDPOINT with the
// (default) gRPC protocol: plaintext on loopback.
func (j *Jaeger) OTLPEndpoint() string { return "http://127.0.0.1:" + strconv.Itoa(j.OTLPGRPC) }

// OTLPHTTPEndpoint is the value for OTEL_EXPORTER_OTLP_ENDPOINT with
// OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf.
func (j *Jaeger) OTLPHTTPEndpoint() string { return "http://127.0.0.1:" + strconv.Itoa(j.OTLPHTTP) }

// QueryURL is the base URL of the query API (and of the UI placeholder).
func (j *Jaeger) QueryURL() string { return "http://127.0.0.1:" + strconv.Itoa(j.Query) }

// Trace is a trace as Jaeger's query API returns it (the fields tests
// read).
type Trace struct {
	TraceID   string             `json:"traceID"`
	Spans     []Span             `json:"spans"`
	Processes map[string]Process `json:"processes"`
}

// Span is one span of a Trace.
type Span struct {
	TraceID       string      `json:"traceID"`
	SpanID        string      `json:"spanID"`
	OperationName string      `json:"operationName"`
	References    []Reference `json:"references"`
	ProcessID     string      `json:"processID"`
	Tags          []KeyValue  `json:"tags"`
	Logs          []Log       `json:"logs"`
	StartTime     int64       `json:"startTime"` // microseconds
	Duration      int64       `json:"duration"`  // microseconds
}

// Reference links a span to its parent.
type Reference struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

// Process is the emitting service with its resource attributes.
type Process struct {
	ServiceName string     `json:"serviceName"`
	Tags        []KeyValue `json:"tags"`
}

// KeyValue is an attribute.
type KeyValue struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

// Log is a span event.
type Log struct {
	Timestamp int64      `json:"timestamp"`
	Fields    []KeyValue `json:"fields"`
}

// Tag returns the string form of a span's attribute, "" when absent.
func (s *Span) Tag(key string) string { return tag(s.Tags, key) }

// Field returns the string form of an event's attribute.
func (l *Log) Field(key string) string { return tag(l.Fields, key) }

func tag(kvs []KeyValue, key string) string {
	for _, kv := range kvs {
		if kv.Key == key {
			return fmt.Sprint(kv.Value)
		}
	}
	return ""
}

// Service is the service name of the process that emitted s.
func (t *Trace) Service(s *Span) string { return t.Processes[s.ProcessID].ServiceName }

// Services lists the services Jaeger has spans of.
func (j *Jaeger) Services(ctx context.Context) ([]string, error) {
	var out struct {
		Data []string `json:"data"`
	}
	err := j.get(ctx, "/api/services", nil, &out)
	return out.Data, err
}

// Traces returns the recent traces with spans of service (at most
// limit; Jaeger's default lookback of an hour).
func (j *Jaeger) Traces(ctx context.Context, service string, limit int) ([]Trace, error) {
	var out struct {
		Data []Trace `json:"data"`
	}
	q := url.Values{"service": {service}, "limit": {strconv.Itoa(limit)}}
	err := j.get(ctx, "/api/traces", q, &out)
	return out.Data, err
}

// Trace returns one trace by its hex ID.
func (j *Jaeger) Trace(ctx context.Context, id string) (*Trace, error) {
	var out struct {
		Data []Trace `json:"data"`
	}
	if err := j.get(ctx, "/api/traces/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	if len(out.Data) == 0 {
		return nil, fmt.Errorf("trace %s: not found", id)
	}
	return &out.Data[0], nil
}

func (j *Jaeger) get(ctx context.Context, path string, q url.Values, v any) error {
	u := j.QueryURL() + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("jaeger %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
