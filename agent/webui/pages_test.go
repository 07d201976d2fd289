package webui

import (
	"io/fs"
	"testing"
)

// Pages are parsed as they are first drawn; every one must parse, and the
// list of pages must name every template.
func TestEveryPageParses(t *testing.T) {
	for _, n := range pageNames {
		if _, err := parsePage(n); err != nil {
			t.Error(err)
		}
		if titles[n] == "" {
			t.Errorf("page %s has no title", n)
		}
	}
	tmpls, err := fs.Glob(files, "templates/*.html")
	if err != nil {
		t.Fatal(err)
	}
	if len(tmpls) != len(pageNames)+1 { // and layout.html
		t.Errorf("templates %v, pages %v", tmpls, pageNames)
	}
}
