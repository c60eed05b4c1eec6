package frame

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

const docPath = "../../../docs/vitals-frames.md"

// docExamples returns the bytes of each text block after the example
// marker in docs/vitals-frames.md. A line's bytes are the hex pairs
// before its "|" (the rest annotates them).
func docExamples(t *testing.T) [][]byte {
	t.Helper()
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(doc), "<!-- vitals-frame-example -->")
	if !ok {
		t.Fatalf("%s has no example marker", docPath)
	}
	var out [][]byte
	for {
		_, block, ok := strings.Cut(after, "```text\n")
		if !ok {
			return out
		}
		block, after, _ = strings.Cut(block, "```")
		var hexText strings.Builder
		for line := range strings.Lines(block) {
			line, _, _ = strings.Cut(line, "|")
			hexText.WriteString(line)
		}
		out = append(out, mustHex(t, hexText.String()))
	}
}

// The document's example frames are what this code writes and reads.
func TestDocExamples(t *testing.T) {
	ts := time.Date(2026, 3, 14, 9, 26, 53, 589793238, time.UTC)
	want := []Frame{
		{Type: TypeSpO2, Priority: High, Flags: Reliable, Seq: 42, DeviceTime: ts, Payload: []byte{97, 72}},
		NewHello(1, 1, ts),
	}
	got := docExamples(t)
	if len(got) != len(want) {
		t.Fatalf("the document has %d examples, the test knows %d", len(got), len(want))
	}
	for i, b := range got {
		f, err := Decode(b)
		if err != nil {
			t.Fatalf("example %d does not decode: %v", i, err)
		}
		if f.Type != want[i].Type || f.Priority != want[i].Priority || f.Flags != want[i].Flags || f.Seq != want[i].Seq ||
			!f.DeviceTime.Equal(ts) || !bytes.Equal(f.Payload, want[i].Payload) {
			t.Fatalf("example %d decodes to %s/%s/%s seq %d at %v", i, f.Type, f.Priority, f.Flags, f.Seq, f.DeviceTime)
		}
		enc, _ := Append(nil, want[i])
		if !bytes.Equal(enc, b) {
			t.Fatalf("example %d: the code now writes\n% x", i, enc)
		}
	}
}

// The document's type table has every type with its value and default
// priority, and states MaxPayload.
func TestDocTypeTable(t *testing.T) {
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(doc), "\n")
	for _, ty := range Types() {
		prefix := fmt.Sprintf("| %#02x | `%s`", uint8(ty), ty)
		found := false
		for _, l := range lines {
			if strings.HasPrefix(l, prefix) {
				found = true
				if cells := strings.Split(l, "|"); len(cells) < 4 || strings.TrimSpace(cells[3]) != DefaultPriority(ty).String() {
					t.Errorf("doc row %q: want default priority %s", l, DefaultPriority(ty))
				}
			}
		}
		if !found {
			t.Errorf("doc has no row starting %q", prefix)
		}
	}
	if !strings.Contains(string(doc), fmt.Sprint(MaxPayload)) {
		t.Errorf("doc does not state MaxPayload (%d)", MaxPayload)
	}
}
