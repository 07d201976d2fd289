package appspec

import "testing"

// FuzzParse feeds app.json parsing what a vendor's build could carry: it
// never panics, and what it accepts validates.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"name":"demo","version":"1.0.0","command":"bin/demo"}`))
	f.Add([]byte(`{"name":"demo","version":"1.0.0","command":"../../bin/sh","ports":[443]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(b)
		if err != nil {
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("Parse accepted an app.json that does not validate: %v", err)
		}
	})
}
