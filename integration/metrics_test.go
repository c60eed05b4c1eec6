package integration

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// metric reads one series from the control plane's /metrics: series is
// the name with its labels as exposed (`name{label="v"}`, or the bare
// name); ok is false when it is not exposed.
func metric(t *testing.T, cp *cpHandle, series string) (v float64, ok bool) {
	t.Helper()
	code, body := getStatus(t, cp, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if rest, found := strings.CutPrefix(sc.Text(), series+" "); found {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("/metrics: %s: %v", series, err)
			}
			return v, true
		}
	}
	return 0, false
}

// wantMetric is an eventually condition: series is exposed with value.
func wantMetric(t *testing.T, cp *cpHandle, series string, want float64) func() error {
	return func() error {
		v, ok := metric(t, cp, series)
		switch {
		case !ok:
			return fmt.Errorf("%s not in /metrics", series)
		case v != want:
			return fmt.Errorf("%s = %v, want %v", series, v, want)
		}
		return nil
	}
}
