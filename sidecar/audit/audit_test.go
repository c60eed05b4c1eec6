package audit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"medmesh/internal/auditlog"
	"medmesh/sidecar/classify"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

func readLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line is not JSON: %v: %s", err, sc.Text())
		}
		out = append(out, m)
	}
	return out
}

func event() Event {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return Event{
		Start: t0, End: t0.Add(12 * time.Millisecond), Method: "GET", Status: 200,
		Source: "spiffe://medmesh.local/ns/default/svc/his", SourceAddress: "10.0.0.7",
		Destination: "spiffe://medmesh.local/ns/default/svc/emr", Service: "emr",
		Class: "fhir.Patient", Priority: classify.Low, Rule: "fhir.read", RequestID: "req-1",
		Patient: classify.NewSecret("Patient/MRN-0042"),
	}
}

func TestRecordIsAuditEvent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(Options{Options: auditlog.Options{Path: path}, Key: testKey, Observer: "emr-1"})
	if err != nil {
		t.Fatal(err)
	}
	e := event()
	if err := l.Record(e); err != nil {
		t.Fatal(err)
	}
	shed := event()
	shed.Shed, shed.Reason, shed.Status, shed.Method = true, "queue full", 503, "BREW"
	l.Record(shed)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if strings.Contains(string(raw), "MRN-0042") {
		t.Fatal("patient reference written in clear")
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	recs := readLines(t, path)
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2", len(recs))
	}
	r := recs[0]
	check := func(got any, want string, what string) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %v, want %q", what, got, want)
		}
	}
	check(r["resourceType"], "AuditEvent", "resourceType")
	check(r["action"], "R", "action")
	check(r["outcome"], "0", "outcome")
	check(r["recorded"], "2026-01-02T03:04:05.012Z", "recorded")
	agents := r["agent"].([]any)
	check(agents[0].(map[string]any)["who"].(map[string]any)["identifier"].(map[string]any)["value"], e.Source, "source agent")
	check(agents[0].(map[string]any)["network"].(map[string]any)["address"], "10.0.0.7", "source address")
	check(agents[1].(map[string]any)["who"].(map[string]any)["identifier"].(map[string]any)["value"], e.Destination, "destination agent")
	ent := r["entity"].([]any)[0].(map[string]any)
	what := ent["what"].(map[string]any)["identifier"].(map[string]any)
	check(what["system"], PatientHashSystem, "entity system")
	check(what["value"], HashPatient(testKey, "Patient/MRN-0042"), "entity hash")
	if HashPatient(testKey, "Patient/MRN-0042") == HashPatient([]byte("another key of 16+ bytes"), "Patient/MRN-0042") {
		t.Error("hash does not depend on the key")
	}
	details := map[string]string{}
	for _, d := range ent["detail"].([]any) {
		dm := d.(map[string]any)
		details[dm["type"].(string)] = dm["valueString"].(string)
	}
	for k, want := range map[string]string{"dataClass": "fhir.Patient", "priority": "low", "rule": "fhir.read", "latencyMs": "12.000", "requestId": "req-1"} {
		if details[k] != want {
			t.Errorf("detail %s = %q, want %q", k, details[k], want)
		}
	}
	check(recs[1]["outcome"], "8", "shed outcome")
	check(recs[1]["outcomeDesc"], "shed by medmesh: queue full", "shed outcomeDesc")
	check(recs[1]["subtype"].([]any)[0].(map[string]any)["code"], "OTHER", "unknown method")
}

func TestRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(Options{Options: auditlog.Options{Path: path, MaxBytes: 2000, MaxFiles: 2, Durability: Batched, BatchInterval: time.Millisecond}, Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	for range 40 {
		if err := l.Record(event()); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, p := range []string{path, path + ".1", path + ".2"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s missing: %v", p, err)
		}
		if st.Size() > 2000 {
			t.Errorf("%s has %d bytes, over the limit", p, st.Size())
		}
		total += len(readLines(t, p))
	}
	if _, err := os.Stat(path + ".3"); err == nil {
		t.Error("more rotated files kept than MaxFiles")
	}
	if total == 0 || total > 40 {
		t.Errorf("%d records across files", total)
	}
	if err := l.Record(event()); err == nil {
		t.Error("record after close succeeded")
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(Options{Options: auditlog.Options{Path: filepath.Join(t.TempDir(), "a")}, Key: []byte("short")}); err == nil || !strings.Contains(err.Error(), "HMAC key") {
		t.Errorf("short key: %v", err)
	}
	if _, err := Open(Options{Options: auditlog.Options{Path: "/nonexistent/dir/audit.log"}, Key: testKey}); err == nil || !strings.Contains(err.Error(), "/nonexistent/dir/audit.log") {
		t.Errorf("bad path error should name it: %v", err)
	}
	if _, err := ParseDurability("sometimes"); err == nil {
		t.Error("bad durability accepted")
	}
}

// TestBatchedCloseLosesNothing: records queued from many goroutines are
// all in the file after a clean Close, including those that had to wait
// for room in a queue far smaller than their number.
func TestBatchedCloseLosesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	// A flush interval longer than the test: only FlushSize and Close
	// write, so the test also shows Close writes what is still queued.
	l, err := Open(Options{Options: auditlog.Options{Path: path, Durability: Batched, QueueSize: 64, FlushSize: 16, FlushInterval: time.Hour}, Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				e := event()
				e.RequestID = fmt.Sprintf("%08d-0000-0000-0000-%012d", w, i)
				if err := l.Record(e); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	recs := readLines(t, path)
	if len(recs) != writers*each {
		t.Fatalf("%d records in the file after Close, want %d", len(recs), writers*each)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		for _, d := range r["entity"].([]any)[0].(map[string]any)["detail"].([]any) {
			if dm := d.(map[string]any); dm["type"] == "requestId" {
				seen[dm["valueString"].(string)] = true
			}
		}
	}
	if len(seen) != writers*each {
		t.Errorf("%d distinct records, want %d", len(seen), writers*each)
	}
	if n := l.Failures(); n != 0 {
		t.Errorf("Failures() = %d, want 0", n)
	}
}

// BenchmarkRecord is what a PHI request pays for its audit record on its
// own path (sync: encode, write, fsync; batch: a copy into the queue), and
// with batch, the writer's work per record is in the CPU time.
func BenchmarkRecord(b *testing.B) {
	for _, d := range []Durability{Batched, SyncEach} {
		b.Run([]string{"sync", "batch"}[map[Durability]int{SyncEach: 0, Batched: 1}[d]], func(b *testing.B) {
			l, err := Open(Options{Options: auditlog.Options{Path: filepath.Join(b.TempDir(), "audit.log"), Durability: d}, Key: testKey})
			if err != nil {
				b.Fatal(err)
			}
			e := event()
			b.ReportAllocs()
			for b.Loop() {
				if err := l.Record(e); err != nil {
					b.Fatal(err)
				}
			}
			if err := l.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}
