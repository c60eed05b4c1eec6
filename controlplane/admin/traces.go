package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"time"

	api "medmesh/api/admin"
)

// The status page draws traces read from the trace backend's query API:
// Jaeger's HTTP API (GET /api/traces/{id}), which Jaeger and Grafana
// Tempo's Jaeger-compatible query frontends both serve. The control plane
// reads it on the browser's behalf: the backend's port need not be
// reachable from an SRE's browser, and the page needs no cross-origin
// access to it.

// errTraceNotFound: the backend has no such trace (not exported yet,
// sampled out, or expired).
var errTraceNotFound = errors.New("trace not found")

var traceIDPattern = regexp.MustCompile(`^[0-9a-f]{16,32}$`)

// Push spans are the per-proxy spans of controlplane/xds (pushtrace.go);
// their attribute names are repeated here rather than importing xds's
// constants into the page's reader, and TestWaterfall pins them.
const (
	spanChange = "medmesh.config_change"
	spanPush   = "xds.push"
	// spanPushSummary stands for every push of a round beyond
	// xds.PushSpanLimit proxies, an event per proxy's answer.
	spanPushSummary = "xds.push.summary"
	tagProxyID      = "medmesh.proxy.id"
	tagOutcome      = "medmesh.xds.outcome"
	tagNACK         = "xds.nack.message"
	tagSpanKind     = "span.kind"
	tagOtelError    = "otel.status_code"
)

// jaegerTrace is the part of Jaeger's query API JSON the page reads.
type jaegerTrace struct {
	TraceID string       `json:"traceID"`
	Spans   []jaegerSpan `json:"spans"`
	// Processes are the programs that made spans, by process ID.
	Processes map[string]struct {
		ServiceName string      `json:"serviceName"`
		Tags        []jaegerTag `json:"tags"`
	} `json:"processes"`
}

type jaegerSpan struct {
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	ProcessID string      `json:"processID"`
	Tags      []jaegerTag `json:"tags"`
	Logs      []struct {
		Timestamp int64       `json:"timestamp"`
		Fields    []jaegerTag `json:"fields"`
	} `json:"logs"`
	StartTime int64 `json:"startTime"` // microseconds since the epoch
	Duration  int64 `json:"duration"`  // microseconds
}

type jaegerTag struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

func tagValue(tags []jaegerTag, key string) string {
	for _, t := range tags {
		if t.Key == key {
			return fmt.Sprint(t.Value)
		}
	}
	return ""
}

// traceQuery reads traces from a Jaeger query API at base.
type traceQuery struct {
	base   string
	client *http.Client
}

func (q *traceQuery) get(ctx context.Context, id string) (*jaegerTrace, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, q.base+"/api/traces/"+id, nil)
	if err != nil {
		return nil, err
	}
	resp, err := q.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("trace backend %s: %w", q.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, errTraceNotFound
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("trace backend %s: %s: %s", q.base, resp.Status, strings.TrimSpace(string(b)))
	}
	var body struct {
		Data []jaegerTrace `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("trace backend %s: decoding trace %s: %w", q.base, id, err)
	}
	if len(body.Data) == 0 || len(body.Data[0].Spans) == 0 {
		return nil, errTraceNotFound
	}
	return &body.Data[0], nil
}

// waterfall turns a trace into rows: a configuration change's own spans
// in tree order, then its proxy pushes slowest first (the proxy holding
// a change back is the first one read); other traces, such as one
// request's hops, in tree order.
func waterfall(tr *jaegerTrace) api.Waterfall {
	w := api.Waterfall{TraceID: tr.TraceID}
	byID := make(map[string]*jaegerSpan, len(tr.Spans))
	children := map[string][]*jaegerSpan{}
	start, end := int64(0), int64(0)
	for i := range tr.Spans {
		s := &tr.Spans[i]
		byID[s.SpanID] = s
		if start == 0 || s.StartTime < start {
			start = s.StartTime
		}
		end = max(end, s.StartTime+s.Duration)
	}
	var roots []*jaegerSpan
	change := false
	for i := range tr.Spans {
		s := &tr.Spans[i]
		if p := parentOf(s); p != "" && byID[p] != nil {
			children[p] = append(children[p], s)
		} else {
			roots = append(roots, s)
		}
		change = change || s.OperationName == spanChange
	}
	byStart := func(ss []*jaegerSpan) {
		sort.SliceStable(ss, func(i, j int) bool { return ss[i].StartTime < ss[j].StartTime })
	}
	services := map[string]bool{}
	var pushes []api.WaterfallSpan
	var walk func(s *jaegerSpan, depth int)
	walk = func(s *jaegerSpan, depth int) {
		row := spanRow(tr, s, depth, start)
		services[row.Service] = true
		if change && s.OperationName == spanPush {
			pushes = append(pushes, row)
		} else {
			w.Spans = append(w.Spans, row)
		}
		kids := children[s.SpanID]
		byStart(kids)
		for _, k := range kids {
			walk(k, depth+1)
		}
	}
	byStart(roots)
	for _, r := range roots {
		walk(r, 0)
	}
	sort.SliceStable(pushes, func(i, j int) bool { return pushes[i].DurationUS > pushes[j].DurationUS })
	w.Spans = append(w.Spans, pushes...)
	w.Start = time.UnixMicro(start).UTC()
	w.DurationUS = end - start
	for s := range services {
		w.Services = append(w.Services, s)
	}
	sort.Strings(w.Services)
	return w
}

func parentOf(s *jaegerSpan) string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	if len(s.References) > 0 {
		return s.References[0].SpanID
	}
	return ""
}

// detailTags are the attributes worth a glance on a row, beyond those
// with columns of their own. Spans carry no PHI (the services and
// medmesh keep it out), so they may be shown as they are.
var detailTags = []string{
	"medmesh.trigger", "medmesh.catalog.version", "medmesh.mesh.rebuilt", "medmesh.services", "medmesh.xds.proxies",
	"medmesh.xds.acks", "medmesh.xds.nacks", "xds.types", "xds.type_url", "xds.version",
	"rpc.service", "rpc.method", "rpc.grpc.status_code", "http.request.method", "http.route", "http.response.status_code",
	"medmesh.phi", "medmesh.priority", "medmesh.class", "medmesh.upstream", "medmesh.outcome",
}

func spanRow(tr *jaegerTrace, s *jaegerSpan, depth int, start int64) api.WaterfallSpan {
	row := api.WaterfallSpan{
		SpanID: s.SpanID, ParentID: parentOf(s), Name: s.OperationName, Depth: depth,
		OffsetUS: s.StartTime - start, DurationUS: s.Duration,
		Kind: tagValue(s.Tags, tagSpanKind), Proxy: tagValue(s.Tags, tagProxyID),
		Outcome: tagValue(s.Tags, tagOutcome), NACK: tagValue(s.Tags, tagNACK),
		Error: tagValue(s.Tags, "error") == "true" || tagValue(s.Tags, tagOtelError) == "ERROR",
	}
	if p, ok := tr.Processes[s.ProcessID]; ok {
		row.Service = p.ServiceName
		if inst := tagValue(p.Tags, "service.instance.id"); inst != "" && inst != p.ServiceName {
			row.Service += " (" + inst + ")"
		}
	}
	row.Detail = details(s.Tags, detailTags)
	for _, l := range s.Logs {
		ev := api.WaterfallEvent{Name: tagValue(l.Fields, "event"), OffsetUS: l.Timestamp - start,
			Proxy: tagValue(l.Fields, tagProxyID), Outcome: tagValue(l.Fields, tagOutcome), NACK: tagValue(l.Fields, tagNACK)}
		var parts []string
		for _, f := range l.Fields {
			switch f.Key {
			case "event", tagProxyID, tagOutcome, tagNACK:
			default:
				parts = append(parts, f.Key+"="+fmt.Sprint(f.Value))
			}
		}
		ev.Detail = strings.Join(parts, " ")
		row.Events = append(row.Events, ev)
	}
	if s.OperationName == spanPushSummary {
		// One event per proxy's answer: the slowest first, as pushes are.
		sort.SliceStable(row.Events, func(i, j int) bool { return row.Events[i].OffsetUS > row.Events[j].OffsetUS })
	}
	return row
}

func details(tags []jaegerTag, keys []string) string {
	var parts []string
	for _, k := range keys {
		if v := tagValue(tags, k); v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	return strings.Join(parts, " ")
}
