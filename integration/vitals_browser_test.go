package integration

import (
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"medmesh/examples/vitals/frame"
	"medmesh/examples/vitals/nurse"
	"medmesh/examples/vitals/reliable"
	"medmesh/internal/testutil"
)

// pageCounters is what the nurse station's page counted (window.medmesh).
type pageCounters struct {
	Frames int `json:"frames"`
	BadCRC int `json:"badCRC"`
	Alarms int `json:"alarms"`
}

// TestNurseStationPageInChromium: the nurse station's page, opened in a
// real (headless) Chromium, subscribes over its WebSocket and receives
// the frames the station delivers; it checks each frame's CRC itself, so
// a frame damaged between the station and the browser would be counted.
func TestNurseStationPageInChromium(t *testing.T) {
	bctx := startChromium(t)
	st := nurse.New(slog.New(slog.DiscardHandler), nil)
	srv := httptest.NewServer(st.Handler())
	defer srv.Close()

	if err := chromedp.Do(bctx, chromedp.Navigate(srv.URL+"/")); err != nil {
		t.Fatalf("opening the page: %v", err)
	}
	eval := func(expr string, v any) {
		t.Helper()
		var err error
		switch p := v.(type) {
		case *string:
			*p, err = chromedp.Run(bctx, chromedp.Evaluate[string](expr))
		case *pageCounters:
			*p, err = chromedp.Run(bctx, chromedp.Evaluate[pageCounters](expr))
		}
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
	}
	var state string
	testutil.Poll(t, testTimeout, "the page's WebSocket connected", func() bool {
		eval(`document.getElementById("state").textContent`, &state)
		return strings.HasPrefix(state, "connected")
	})

	// A device's frames, numbered as a device numbers them, delivered
	// by the station once the page is subscribed.
	snd := reliable.NewSender(reliable.SenderOptions{})
	const n = 120
	now := time.Now()
	for i := range n {
		typ := frame.TypeECG
		switch {
		case i%20 == 0:
			typ = frame.TypeCardiacArrest
		case i%10 == 5:
			typ = frame.TypeDeviceStatus
		}
		f, err := snd.Send(frame.New(typ, now, []byte{byte(i), 1, 2, 3}), now)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := frame.Append(nil, f)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Accept("bed-07", raw); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	var got pageCounters
	testutil.Poll(t, testTimeout, "the frames at the page", func() bool {
		eval(`({frames: window.medmesh.frames, badCRC: window.medmesh.badCRC, alarms: window.medmesh.alarms})`, &got)
		return got.Frames+got.BadCRC >= n
	})
	if got.Frames != n || got.BadCRC != 0 || got.Alarms != n/20 {
		t.Errorf("the page counted %d frames (%d bad CRC, %d alarms); want %d frames, none bad, %d alarms", got.Frames, got.BadCRC, got.Alarms, n, n/20)
	}
	var row string
	eval(`document.querySelector("#devices tr td").textContent`, &row)
	if row != "bed-07" {
		t.Errorf("the page's device row: %q; want bed-07", row)
	}
}
