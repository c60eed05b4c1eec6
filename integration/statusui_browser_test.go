package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/hashicorp/consul/api"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"medmesh/certs"
	"medmesh/controlplane"
	"medmesh/controlplane/bootstrap"
	cpxds "medmesh/controlplane/xds"
	"medmesh/examples/clinical"
	"medmesh/internal/jaegertest"
	"medmesh/internal/simproxy"
	"medmesh/registry"
	"medmesh/sidecar/middleware"
	"medmesh/sidecar/phi"
	"medmesh/sidecar/sched"
)

// TestStatusUIInBrowser drives the status page (/ui) in a real headless
// Chromium against a control plane reading a real Consul, exporting its
// traces to a real Jaeger: the page lists the connected proxies with
// their SVIDs, shows in red the NACK a simulated Envoy sends after a
// configuration it cannot take, opens that change's waterfall from
// Jaeger (the change, then each proxy's push, the NACKed one marked)
// with the keyboard, and opens a request's trace (caller, PHI middleware,
// callee) looked up by its trace ID. The page must log no console error
// and throw no exception. A screenshot of each view is saved as an
// artifact ($MEDMESH_ARTIFACTS, else artifacts/ at the module root).
func TestStatusUIInBrowser(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*testTimeout)
	defer cancel()
	j, provider := startJaeger(ctx, t, "")
	cpTP, emrTP, hisTP := provider("medmesh-controlplane", "cp-1"), provider("emr", "emr-1"), provider("his", "his-1")

	ca, err := certs.New(certs.Options{TrustDomain: "medmesh.local", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	consul := startConsul(t, true)
	c := consul.Client()
	emrPort := freePort(t)
	register(t, c, "emr", "emr-1", emrPort, map[string]string{registry.MetaProtocol: "grpc"}, api.HealthPassing)
	// --dev on loopback, as the admin port's read role lets loopback
	// callers through only in development.
	cp := startControlPlane(t, consulSource(consul), func(o *controlplane.Options) {
		o.TracerProvider, o.TraceQueryURL, o.Identities, o.Dev = cpTP, j.QueryURL(), ca, true
	})

	// A simulated Envoy of the ward application that cannot take maglev
	// (an older Envoy): the next change is NACKed.
	rejectMaglev := func(typ string, m proto.Message) error {
		if c, ok := m.(*clusterv3.Cluster); ok && c.GetLbPolicy() == clusterv3.Cluster_MAGLEV {
			return errors.New("cluster " + c.GetName() + ": maglev is not supported by this proxy")
		}
		return validateAll(typ, m)
	}
	ward := startSimProxy(t, cp.xdsAddr(), simproxy.Options{NodeID: "ward-1", Cluster: "ward", Delta: true, Validate: rejectMaglev})
	// The EMR serves behind the PHI middleware; HIS calls it proxyless.
	prop := otelgrpc.WithPropagators(propagation.TraceContext{})
	eng := phi.New(phi.Options{Scheduler: sched.New(sched.Config{Limit: 8}), Tracer: emrTP.Tracer("medmesh/sidecar"),
		Service: "emr", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	serveXDS(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: "emr-1", Service: "emr", SVIDDir: svidDir(t, ca, "emr")}, emrPort, true,
		&clinical.Server{Instance: "emr-1", Handle: func(context.Context, string) error { return nil }},
		grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(emrTP), prop)),
		grpc.UnaryInterceptor(middleware.UnaryServerInterceptor(eng)))
	cc := dialXDSWith(t, bootstrap.Options{XDSAddress: cp.xdsAddr(), NodeID: "his-1", Service: "his", SVIDDir: svidDir(t, ca, "his")}, "emr", true,
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(hisTP), prop)))
	if err := ward.Wait(ctx, fullConfig("emr")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "emr answers through the mesh", func() error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := clinical.Fetch(cctx, cc, "Observation")
		return err
	})

	browser := startChromium(t)
	var consoleMu sync.Mutex
	var consoleErrs []string
	if err := chromedp.Listen(browser, func(ev any) {
		consoleMu.Lock()
		defer consoleMu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
				var args []string
				for _, a := range ev.Args {
					args = append(args, string(a.Value)+a.Description)
				}
				consoleErrs = append(consoleErrs, "console."+string(ev.Type)+": "+strings.Join(args, " "))
			}
		case *runtime.EventExceptionThrown:
			msg := ev.ExceptionDetails.Text
			if ex := ev.ExceptionDetails.Exception; ex != nil {
				msg += " " + ex.Description
			}
			consoleErrs = append(consoleErrs, "uncaught exception: "+msg)
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError {
				consoleErrs = append(consoleErrs, "log ("+string(ev.Entry.Source)+"): "+ev.Entry.Text+" "+ev.Entry.URL)
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	checkConsole := func(when string) {
		t.Helper()
		consoleMu.Lock()
		defer consoleMu.Unlock()
		if len(consoleErrs) > 0 {
			t.Fatalf("%s: the page logged errors:\n%s", when, strings.Join(consoleErrs, "\n"))
		}
	}
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		rctx, cancel := context.WithTimeout(browser, testTimeout)
		defer cancel()
		if err := chromedp.Do(rctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// poll evaluates a page expression until it returns "" (ok), else
	// reports the last thing it said.
	poll := func(what, expr string) {
		t.Helper()
		eventuallyCtx(t, ctx, what, func() error {
			got, err := chromedp.Run(browser, chromedp.Evaluate[string](expr))
			if err != nil {
				return err
			}
			if got != "" {
				return errors.New(got)
			}
			return nil
		})
	}

	run("loading /ui", chromedp.Navigate(cp.adminURL()+"/ui?refresh=300"))
	// The console check can fail: a console.error is caught.
	poll("a probe console error is seen", `(console.error("medmesh-probe"), "")`)
	eventuallyCtx(t, ctx, "the probe console error caught", func() error {
		consoleMu.Lock()
		defer consoleMu.Unlock()
		for i, e := range consoleErrs {
			if strings.Contains(e, "medmesh-probe") {
				consoleErrs = append(consoleErrs[:i], consoleErrs[i+1:]...)
				return nil
			}
		}
		return fmt.Errorf("console errors seen: %q", consoleErrs)
	})
	// The proxies, each with its SVID, and the identities with expiry.
	poll("the page lists the connected proxies with their identities", `(() => {
	  for (const id of ["ward-1", "emr-1", "his-1"]) {
	    if (!document.querySelector('#proxies tr[data-proxy="' + id + '"]')) return "no row for " + id;
	  }
	  const ward = document.querySelector('#identities tr[data-identity="ward-1"]');
	  if (!ward || !ward.textContent.includes("spiffe://medmesh.local/ns/default/svc/ward")) return "ward-1 identity: " + (ward && ward.textContent);
	  if (!ward.querySelector("time[datetime]")) return "no SVID expiry for ward-1";
	  const emr = document.querySelector('#services tr[data-service="emr"]');
	  if (!emr || !emr.textContent.includes("passing")) return "emr service health: " + (emr && emr.textContent);
	  return "";
	})()`)
	checkConsole("overview")

	// A clinical call, under a span of the caller's own.
	callCtx, span := hisTP.Tracer("his").Start(ctx, "his.admission-lookup")
	if _, err := clinical.Fetch(callCtx, cc, "Observation"); err != nil {
		t.Fatal(err)
	}
	span.End()
	callTrace := span.SpanContext().TraceID().String()

	// The bad configuration: a maglev service the ward's Envoy rejects.
	register(t, c, "imaging", "imaging-1", freePort(t), map[string]string{"medmesh-lb": "maglev"}, api.HealthPassing)
	poll("the NACK appears in red", `(() => {
	  const row = document.querySelector('#proxies tr[data-proxy="ward-1"]');
	  const nack = row && row.querySelector('.nack-box');
	  if (!nack) return "no NACK shown for ward-1 yet";
	  if (!nack.textContent.includes("maglev is not supported")) return "NACK text: " + nack.textContent;
	  const color = getComputedStyle(nack).color;
	  if (color !== "rgb(164, 0, 0)") return "NACK colour " + color + ", want red";
	  return "";
	})()`)
	checkConsole("after the NACK")
	poll("readable contrast (WCAG AA, 4.5:1) of every text on the page", contrastCheck)
	saveScreenshot(t, browser, "ui-overview.png")

	// The change that carried the imaging service: its trace holds a
	// push to the ward's Envoy that ended in the NACK. Wait until Jaeger
	// holds it whole, then open it from the page's change list.
	var changeID string
	eventuallyCtx(t, ctx, "the imaging change's trace in Jaeger, the ward's push NACKed", func() error {
		traces, err := j.Traces(ctx, "medmesh-controlplane", 100)
		if err != nil {
			return err
		}
		for i := range traces {
			for _, s := range traces[i].Spans {
				if s.OperationName == "xds.push" && s.Tag(cpxds.AttrProxyID) == "ward-1" && s.Tag(cpxds.AttrOutcome) == "nack" {
					changeID = traces[i].TraceID
					return nil
				}
			}
		}
		return fmt.Errorf("%d control plane traces, none with the NACKed push yet", len(traces))
	})
	link := `#changes a[href="#trace/` + changeID + `"]`
	poll("the change is listed with a link to its waterfall", `document.querySelector('`+link+`') ? "" : "change `+changeID+` not listed"`)
	// Without a mouse: focus the link and press Enter. (Focused by script:
	// the list redraws as ages change, and the page gives focus back to
	// the same link when it does.)
	poll("focus on the change's link", `(() => {
	  const a = document.querySelector('`+link+`');
	  if (!a) return "link gone";
	  a.focus();
	  return document.activeElement === a ? "" : "not focused";
	})()`)
	run("opening the waterfall with the keyboard", chromedp.KeyEvent(kb.Enter))
	poll("the waterfall: the change first, then the pushes, the NACKed one marked", `(() => {
	  if (document.getElementById("trace").hidden) return "trace view not shown";
	  const rows = [...document.querySelectorAll('#trace tbody tr')];
	  if (!rows.length) return "no rows yet: " + document.querySelector('#trace .body').textContent;
	  if (rows[0].dataset.span !== "medmesh.config_change") return "first row " + rows[0].dataset.span;
	  const pushes = rows.filter((r) => r.dataset.span === "xds.push");
	  const ward = pushes.find((r) => r.dataset.proxy === "ward-1");
	  if (!ward) return "no push row for ward-1 among " + pushes.map((r) => r.dataset.proxy);
	  if (ward.dataset.outcome !== "nack" || !ward.classList.contains("row-nack")) return "ward-1 push not marked NACK: " + ward.dataset.outcome;
	  if (!ward.textContent.includes("maglev is not supported")) return "NACK reason not shown: " + ward.textContent;
	  const firstPush = rows.findIndex((r) => r.dataset.span === "xds.push");
	  if (rows.slice(firstPush).some((r) => r.dataset.span !== "xds.push")) return "the change's own steps are not all before the pushes";
	  if (document.activeElement !== document.getElementById("h-trace")) return "focus not moved to the trace heading";
	  return "";
	})()`)
	checkConsole("change waterfall")
	poll("readable contrast in the waterfall", contrastCheck)
	saveScreenshot(t, browser, "ui-change-waterfall.png")

	// The request: looked up by its trace ID in the form.
	pollTrace(t, ctx, j, callTrace, func(tr *jaegertest.Trace) error {
		if len(tr.Spans) < 4 {
			return fmt.Errorf("%d spans so far", len(tr.Spans))
		}
		return nil
	})
	run("looking up the request trace with the keyboard", chromedp.Focus("#trace-id"), chromedp.SendKeys("#trace-id", callTrace),
		chromedp.KeyEvent(kb.Enter))
	poll("the request's hops: caller, middleware, callee", `(() => {
	  const rows = [...document.querySelectorAll('#trace tbody tr')];
	  if (document.body.dataset.trace !== "`+callTrace+`") return "request trace not shown yet";
	  const text = rows.map((r) => r.textContent).join("\n");
	  for (const want of ["his.admission-lookup", "medmesh.sidecar.admit", "his (his-1) (client)", "emr (emr-1) (server)"]) {
	    if (!text.includes(want)) return "no " + want + " in " + text;
	  }
	  return "";
	})()`)
	checkConsole("request trace")
	saveScreenshot(t, browser, "ui-request-trace.png")

	// Back to the overview with the keyboard.
	poll("focus on the back link", `(() => {
	  const a = document.getElementById("back");
	  a.focus();
	  return document.activeElement === a ? "" : "focus on " + document.activeElement.outerHTML.slice(0, 80);
	})()`)
	run("back", chromedp.KeyEvent(kb.Enter))
	poll("overview shown again, focus back on the look-up field", `document.getElementById("overview").hidden ? "still on the trace, " + location.hash + ", focus on " + document.activeElement.outerHTML.slice(0, 80) :
	  document.activeElement.id === "trace-id" ? "" : "focus on " + document.activeElement.outerHTML.slice(0, 80)`)
	checkConsole("at the end")
}

// contrastCheck lists the visible texts whose colour against their
// background is below WCAG AA's 4.5:1 ("" when there are none).
const contrastCheck = `(() => {
  const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const bgOf = (el) => { for (; el; el = el.parentElement) { const c = rgb(getComputedStyle(el).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3); } return [255, 255, 255]; };
  const bad = [];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    const el = n.parentElement;
    if (!n.textContent.trim() || !el || !el.getClientRects().length || el.closest("[hidden], noscript, .skip")) continue;
    const a = lum(rgb(getComputedStyle(el).color)), b = lum(bgOf(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) bad.push(n.textContent.trim().slice(0, 30) + " (" + ratio.toFixed(2) + ")");
  }
  return bad.length ? "low contrast: " + bad.slice(0, 10).join("; ") : "";
})()`

// saveScreenshot saves the page as an artifact and says where.
func saveScreenshot(t *testing.T, browser context.Context, name string) {
	t.Helper()
	dir := os.Getenv("MEDMESH_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "artifacts")
	}
	ctx, cancel := context.WithTimeout(browser, testTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path, _ := filepath.Abs(filepath.Join(dir, name))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}
