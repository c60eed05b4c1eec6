package translate

import (
	"strings"
	"testing"
)

// The access log never names what could carry PHI: no path, query,
// header other than the method, and no caller-supplied request ID.
func TestAccessLogHasNoPHI(t *testing.T) {
	for k, v := range accessLogFields {
		up := strings.ToUpper(v)
		for _, bad := range []string{"PATH", "QUERY", "X-REQUEST-ID", "AUTHORITY", "USER-AGENT", "REFERER"} {
			if strings.Contains(up, bad) {
				t.Errorf("access log field %q = %q may carry PHI (%s)", k, v, bad)
			}
		}
		if strings.Contains(up, "%REQ(") && up != "%REQ(:METHOD)%" {
			t.Errorf("access log field %q = %q logs a request header", k, v)
		}
	}
	if len(accessLogs()) != 1 {
		t.Fatal("no access log")
	}
}
