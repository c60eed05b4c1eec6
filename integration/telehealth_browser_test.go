package integration

import (
	"context"
	"fmt"
	"net/http/httptest"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"medmesh/examples/telehealth/peer"
	"medmesh/examples/telehealth/signal"
	"medmesh/internal/testutil"
)

// chromiumPath is Debian's Chromium, installed by `make tools`.
const chromiumPath = "/usr/bin/chromium"

// pageState is window.telehealth on the call page.
type pageState struct {
	Status     string `json:"status"`
	FramesSent int    `json:"framesSent"`
	Error      string `json:"error"`
	Connection string `json:"connection"`
}

// startChromium starts a headless Chromium with a fake camera and
// microphone and returns a browser context; it fails the test when
// Chromium is not installed (unless -short).
func startChromium(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if testing.Short() {
			t.Skip("chromium not installed (skipped with -short)")
		}
		t.Fatalf("chromium not installed: run `make tools` (apt-get install chromium): %v", err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		// Root on a closed network: no sandbox, no GPU, and none of the
		// background connections Chromium otherwise makes (they are
		// refused, many at a time).
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		// A fake camera and microphone, allowed without a prompt.
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		// Loopback candidates, and plain addresses rather than mDNS
		// names, so the call stays on 127.0.0.1 with the pion peer's
		// loopback-only ICE.
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("disable-features", "WebRtcHideLocalIpsWithMdns,Translate,MediaRouter,OptimizationHints"),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first Run starts the browser; it must not carry a timeout.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// TestTelehealthBrowserCall: a patient in a real (headless) Chromium
// joins, with a fake camera and microphone, a call that a clinician's
// pion peer opened through the mesh (mTLS, intentions); the page is the
// signalling service's own, signalling over its WebSocket. The pion
// clinician receives the browser's video as RTP with the negotiated
// payload type and the vitals frames the page sends on the DataChannel.
func TestTelehealthBrowserCall(t *testing.T) {
	browser := startChromium(t)
	m := startTelehealthMesh(t, "clinician-app")
	web := httptest.NewServer(m.signal.Handler())
	t.Cleanup(web.Close)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	const frames = 100
	clin, err := joinWhenRouted(t, ctx, meshDialer(m.dialSignal(t, "clinician-app", "clinician-1")), peer.Options{
		Role: signal.RoleClinician, Call: "visit-0004-browser", Kind: "video-visit", LoopbackOnly: true,
		UDPPortMin: 44200, UDPPortMax: 44299, Codec: vitalsCodec,
	})
	if err != nil {
		t.Fatalf("clinician join through the mesh: %v", err)
	}
	link := web.URL + "/?" + url.Values{"call": {"visit-0004-browser"}, "invite": {clin.Invite()}, "role": {signal.RolePatient},
		"kind": {"video-visit"}, "frames": {fmt.Sprint(frames)}, "interval": {"20"}}.Encode()
	if err := chromedp.Do(browser, chromedp.Navigate(link)); err != nil {
		t.Fatalf("opening the call page: %v", err)
	}
	page := func() pageState {
		st, err := chromedp.Run(browser, chromedp.Evaluate[pageState]("window.telehealth"))
		if err != nil {
			t.Fatalf("reading the page's state: %v", err)
		}
		return st
	}
	testutil.Poll(t, testTimeout, "the browser's video and vitals at the pion clinician", func() bool {
		if st := page(); st.Status == "error" {
			t.Fatalf("the page failed: %s", st.Error)
		}
		s := clin.Stats()
		return s.VideoPackets >= 30 && s.Messages >= frames
	})
	s := clin.Stats()
	st := page()
	t.Logf("browser page %+v; clinician: video %s PT %d, %d video packets, RTP by PT %v, %d vitals frames (p99 latency %s from the page's clock), pair %s/%s, setup %s",
		st, s.VideoMimeType, s.VideoPayloadType, s.VideoPackets, s.RTPPayloadTypes, s.FramesReceived,
		peer.Percentile(s.FrameLatencies, 99).Round(time.Microsecond), s.LocalCandidate, s.RemoteCandidate, s.Setup.Round(time.Microsecond))
	if s.RTPPayloadTypes[s.VideoPayloadType] != s.VideoPackets || s.VideoPayloadType == 0 {
		t.Errorf("video RTP: negotiated payload type %d, packets by payload type %v", s.VideoPayloadType, s.RTPPayloadTypes)
	}
	if st.FramesSent != frames || st.Connection != "connected" {
		t.Errorf("page: %+v; want %d frames sent, connected", st, frames)
	}
	checkFrames(t, s, frames)
}
