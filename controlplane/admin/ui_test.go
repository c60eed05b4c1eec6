package admin

import (
	"encoding/json"
	"fmt"
	"testing"

	api "medmesh/api/admin"
	"medmesh/controlplane/xds"
)

// A configuration change as Jaeger's query API returns it (GET
// /api/traces/{id}, trimmed): the round, its steps, and three pushes, one
// NACKed and one still in flight with an ACK event.
const changeTrace = `{"data":[{"traceID":"t1","processes":{"p1":{"serviceName":"medmesh-controlplane","tags":[{"key":"service.instance.id","type":"string","value":"cp-1"}]}},
"spans":[
 {"traceID":"t1","spanID":"push-fast","operationName":"xds.push","references":[{"refType":"CHILD_OF","traceID":"t1","spanID":"publish"}],"processID":"p1","startTime":1000300,"duration":100,
  "tags":[{"key":"medmesh.proxy.id","type":"string","value":"emr-1"},{"key":"medmesh.xds.outcome","type":"string","value":"ack"},{"key":"span.kind","type":"string","value":"producer"}],
  "logs":[{"timestamp":1000350,"fields":[{"key":"event","type":"string","value":"ack"},{"key":"xds.type_url","type":"string","value":"LDS"}]}]},
 {"traceID":"t1","spanID":"root","operationName":"medmesh.config_change","references":[],"processID":"p1","startTime":1000000,"duration":900,
  "tags":[{"key":"medmesh.trigger","type":"string","value":"[\"catalog\"]"}]},
 {"traceID":"t1","spanID":"push-slow","operationName":"xds.push","references":[{"refType":"CHILD_OF","traceID":"t1","spanID":"publish"}],"processID":"p1","startTime":1000310,"duration":590,
  "tags":[{"key":"medmesh.proxy.id","type":"string","value":"ward-1"},{"key":"medmesh.xds.outcome","type":"string","value":"nack"},
   {"key":"xds.nack.message","type":"string","value":"maglev is not supported"},{"key":"otel.status_code","type":"string","value":"ERROR"},{"key":"error","type":"bool","value":true}]},
 {"traceID":"t1","spanID":"build","operationName":"ir.build","references":[{"refType":"CHILD_OF","traceID":"t1","spanID":"root"}],"processID":"p1","startTime":1000010,"duration":50,
  "tags":[{"key":"medmesh.services","type":"int64","value":2}]},
 {"traceID":"t1","spanID":"publish","operationName":"xds.publish","references":[{"refType":"CHILD_OF","traceID":"t1","spanID":"root"}],"processID":"p1","startTime":1000100,"duration":250,"tags":[]},
 {"traceID":"t1","spanID":"push-mid","operationName":"xds.push","references":[{"refType":"CHILD_OF","traceID":"t1","spanID":"publish"}],"processID":"p1","startTime":1000320,"duration":300,
  "tags":[{"key":"medmesh.proxy.id","type":"string","value":"his-1"},{"key":"medmesh.xds.outcome","type":"string","value":"ack"}]}
]}]}`

func decodeTrace(t *testing.T, body string) *jaegerTrace {
	t.Helper()
	var resp struct {
		Data []jaegerTrace `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatal(err)
	}
	return &resp.Data[0]
}

// TestWaterfallChange: the change's own steps in tree order, then every
// push slowest first, the NACKed one carrying its reason.
func TestWaterfallChange(t *testing.T) {
	w := waterfall(decodeTrace(t, changeTrace))
	var got []string
	for _, s := range w.Spans {
		got = append(got, fmt.Sprintf("%s/%d/%s", s.Name, s.Depth, s.Proxy))
	}
	want := []string{"medmesh.config_change/0/", "ir.build/1/", "xds.publish/1/",
		"xds.push/2/ward-1", "xds.push/2/his-1", "xds.push/2/emr-1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("rows %v\nwant %v", got, want)
	}
	ward := w.Spans[3]
	if !ward.Error || ward.Outcome != "nack" || ward.NACK != "maglev is not supported" || ward.OffsetUS != 310 || ward.DurationUS != 590 {
		t.Errorf("NACKed push row %+v", ward)
	}
	if emr := w.Spans[5]; len(emr.Events) != 1 || emr.Events[0].Name != "ack" || emr.Events[0].OffsetUS != 350 || emr.Kind != "producer" {
		t.Errorf("ACKed push row %+v", emr)
	}
	if w.DurationUS != 900 || w.Start.UnixMicro() != 1000000 || fmt.Sprint(w.Services) != "[medmesh-controlplane (cp-1)]" {
		t.Errorf("trace summary %+v", w)
	}
	if w.Spans[0].Detail != `medmesh.trigger=["catalog"]` || w.Spans[1].Detail != "medmesh.services=2" {
		t.Errorf("details %q %q", w.Spans[0].Detail, w.Spans[1].Detail)
	}
}

// TestWaterfallRequest: a request's trace stays in tree order (hops in
// call order), and a span whose parent was not exported is drawn as a
// root rather than dropped.
func TestWaterfallRequest(t *testing.T) {
	const body = `{"data":[{"traceID":"t2","processes":{"a":{"serviceName":"his"},"b":{"serviceName":"emr"}},"spans":[
	 {"spanID":"srv","operationName":"Fetch","references":[{"refType":"CHILD_OF","spanID":"cli"}],"processID":"b","startTime":20,"duration":50,"tags":[{"key":"span.kind","value":"server"}]},
	 {"spanID":"cli","operationName":"Fetch","references":[{"refType":"CHILD_OF","spanID":"gone"}],"processID":"a","startTime":10,"duration":80,"tags":[{"key":"span.kind","value":"client"}]},
	 {"spanID":"admit","operationName":"medmesh.sidecar.admit","references":[{"refType":"CHILD_OF","spanID":"srv"}],"processID":"b","startTime":30,"duration":5,"tags":[]},
	 {"spanID":"xds","operationName":"xds.push","references":[{"refType":"CHILD_OF","spanID":"admit"}],"processID":"b","startTime":31,"duration":500,"tags":[]}]}]}`
	w := waterfall(decodeTrace(t, body))
	var got []string
	for _, s := range w.Spans {
		got = append(got, fmt.Sprintf("%s %s %s %d", s.Service, s.Kind, s.Name, s.Depth))
	}
	// Not a change: a span named like a push keeps its place.
	want := []string{"his client Fetch 0", "emr server Fetch 1", "emr  medmesh.sidecar.admit 2", "emr  xds.push 3"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("rows %q\nwant %q", got, want)
	}
}

// TestPushTagNames: the page reads the attribute names xds writes.
func TestPushTagNames(t *testing.T) {
	for have, want := range map[string]string{tagProxyID: xds.AttrProxyID, tagOutcome: xds.AttrOutcome, tagNACK: xds.AttrNACK} {
		if have != want {
			t.Errorf("the page reads %q, xds writes %q", have, want)
		}
	}
}

func TestChangeLogKeepsTheNewest(t *testing.T) {
	l := NewChangeLog(3)
	if got := l.Recent(); got == nil || len(got) != 0 {
		t.Fatalf("empty log: %#v", got)
	}
	for i := range 5 {
		l.Add(api.Change{TraceID: fmt.Sprint(i)})
	}
	var ids []string
	for _, c := range l.Recent() {
		ids = append(ids, c.TraceID)
	}
	if fmt.Sprint(ids) != "[4 3 2]" {
		t.Fatalf("recent %v, want the three newest, newest first", ids)
	}
	var none *ChangeLog
	none.Add(api.Change{})
	if len(none.Recent()) != 0 {
		t.Fatal("a nil log lists changes")
	}
}

// TestWaterfallSummary: beyond the per-proxy span limit a round's pushes
// are events on one summary span; they are listed slowest first, each
// naming its proxy and outcome.
func TestWaterfallSummary(t *testing.T) {
	const body = `{"data":[{"traceID":"t3","processes":{"p":{"serviceName":"medmesh-controlplane"}},"spans":[
	 {"spanID":"root","operationName":"medmesh.config_change","processID":"p","startTime":0,"duration":900,"tags":[]},
	 {"spanID":"sum","operationName":"xds.push.summary","references":[{"refType":"CHILD_OF","spanID":"root"}],"processID":"p","startTime":10,"duration":800,"tags":[],
	  "logs":[
	   {"timestamp":100,"fields":[{"key":"event","value":"xds.push"},{"key":"medmesh.proxy.id","value":"a"},{"key":"medmesh.xds.outcome","value":"ack"}]},
	   {"timestamp":700,"fields":[{"key":"event","value":"xds.push"},{"key":"medmesh.proxy.id","value":"b"},{"key":"medmesh.xds.outcome","value":"nack"},{"key":"xds.nack.message","value":"bad"}]},
	   {"timestamp":300,"fields":[{"key":"event","value":"xds.push"},{"key":"medmesh.proxy.id","value":"c"},{"key":"medmesh.xds.outcome","value":"ack"},{"key":"other","value":1}]}]}]}]}`
	w := waterfall(decodeTrace(t, body))
	if len(w.Spans) != 2 || w.Spans[1].Name != "xds.push.summary" {
		t.Fatalf("rows %+v", w.Spans)
	}
	var got []string
	for _, e := range w.Spans[1].Events {
		got = append(got, fmt.Sprintf("%s:%s:%s:%s", e.Proxy, e.Outcome, e.NACK, e.Detail))
	}
	if want := "[b:nack:bad: c:ack::other=1 a:ack::]"; fmt.Sprint(got) != want {
		t.Fatalf("events %v, want %s", got, want)
	}
}
