package auditlog

import (
	"unicode/utf8"
)

// AppendJSON appends e's JSON encoding to buf, byte for byte what
// encoding/json gives for it (appendjson_test.go checks this on varied
// and hostile values). Every PHI request is audited, and reflection over
// these nested structs was most of a record's cost (about 7 us of 7.6 on
// 2 cores); the batch writer does it for every record, on a core the
// requests need.
func (e *AuditEvent) AppendJSON(b []byte) []byte {
	b = append(b, `{"resourceType":`...)
	b = appendString(b, e.ResourceType)
	b = append(b, `,"type":`...)
	b = e.Type.appendJSON(b)
	if len(e.Subtype) > 0 {
		b = append(b, `,"subtype":`...)
		b = appendCodings(b, e.Subtype)
	}
	b = append(b, `,"action":`...)
	b = appendString(b, e.Action)
	b = append(b, `,"period":{"start":`...)
	b = appendString(b, e.Period.Start)
	b = append(b, `,"end":`...)
	b = appendString(b, e.Period.End)
	b = append(b, `},"recorded":`...)
	b = appendString(b, e.Recorded)
	b = append(b, `,"outcome":`...)
	b = appendString(b, e.Outcome)
	if e.OutcomeDesc != "" {
		b = append(b, `,"outcomeDesc":`...)
		b = appendString(b, e.OutcomeDesc)
	}
	b = append(b, `,"agent":`...)
	b = appendArray(b, e.Agent, (*Agent).appendJSON)
	b = append(b, `,"source":`...)
	b = e.Source.appendJSON(b)
	b = append(b, `,"entity":`...)
	b = appendArray(b, e.Entity, (*Entity).appendJSON)
	return append(b, '}')
}

// appendArray appends s as a JSON array, each element by elem; a nil
// slice is null, as encoding/json writes it.
func appendArray[T any](b []byte, s []T, elem func(*T, []byte) []byte) []byte {
	if s == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i := range s {
		if i > 0 {
			b = append(b, ',')
		}
		b = elem(&s[i], b)
	}
	return append(b, ']')
}

func (c *Coding) appendJSON(b []byte) []byte {
	b = append(b, '{')
	if c.System != "" {
		b = append(b, `"system":`...)
		b = appendString(b, c.System)
		b = append(b, ',')
	}
	b = append(b, `"code":`...)
	b = appendString(b, c.Code)
	if c.Display != "" {
		b = append(b, `,"display":`...)
		b = appendString(b, c.Display)
	}
	return append(b, '}')
}

func appendCodings(b []byte, cs []Coding) []byte {
	return appendArray(b, cs, (*Coding).appendJSON)
}

func (r *Reference) appendJSON(b []byte) []byte {
	b = append(b, `{"identifier":{"system":`...)
	b = appendString(b, r.Identifier.System)
	b = append(b, `,"value":`...)
	b = appendString(b, r.Identifier.Value)
	b = append(b, '}')
	if r.Display != "" {
		b = append(b, `,"display":`...)
		b = appendString(b, r.Display)
	}
	return append(b, '}')
}

func (a *Agent) appendJSON(b []byte) []byte {
	b = append(b, `{"type":{"coding":`...)
	b = appendCodings(b, a.Type.Coding)
	b = append(b, '}')
	if a.Who != nil {
		b = append(b, `,"who":`...)
		b = a.Who.appendJSON(b)
	}
	if a.Requestor {
		b = append(b, `,"requestor":true`...)
	} else {
		b = append(b, `,"requestor":false`...)
	}
	if a.Network != nil {
		b = append(b, `,"network":{"address":`...)
		b = appendString(b, a.Network.Address)
		b = append(b, `,"type":`...)
		b = appendString(b, a.Network.Type)
		b = append(b, '}')
	}
	return append(b, '}')
}

func (s *Source) appendJSON(b []byte) []byte {
	b = append(b, '{')
	if s.Site != "" {
		b = append(b, `"site":`...)
		b = appendString(b, s.Site)
		b = append(b, ',')
	}
	b = append(b, `"observer":`...)
	b = s.Observer.appendJSON(b)
	b = append(b, `,"type":`...)
	b = appendCodings(b, s.Type)
	return append(b, '}')
}

func (e *Entity) appendJSON(b []byte) []byte {
	b = append(b, '{')
	sep := false
	field := func(name string) {
		if sep {
			b = append(b, ',')
		}
		b = append(b, name...)
		sep = true
	}
	if e.What != nil {
		field(`"what":`)
		b = e.What.appendJSON(b)
	}
	if e.Type != nil {
		field(`"type":`)
		b = e.Type.appendJSON(b)
	}
	if e.Role != nil {
		field(`"role":`)
		b = e.Role.appendJSON(b)
	}
	field(`"detail":`)
	b = appendArray(b, e.Detail, (*Detail).appendJSON)
	return append(b, '}')
}

func (d *Detail) appendJSON(b []byte) []byte {
	b = append(b, `{"type":`...)
	b = appendString(b, d.Type)
	b = append(b, `,"valueString":`...)
	b = appendString(b, d.ValueString)
	return append(b, '}')
}

const hex = "0123456789abcdef"

// plain says which ASCII bytes encoding/json writes as they are.
var plain = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// appendString appends s as a JSON string the way encoding/json does by
// default: HTML-safe (<, >, & escaped), U+2028 and U+2029 escaped,
// invalid UTF-8 replaced by U+FFFD.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if plain[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
