// Command demo is the demonstration application keel's images and tests
// install into the application slots. It serves a page with its version and
// a counter, keeps the counter in $DATA_DIR/counter (written atomically, so
// it survives updates, rollbacks and power cuts), and answers /healthz.
//
// Its version comes from the linker (-X main.version=1.2.3). Built with
// -X main.broken=1 its /healthz answers 500, which is how the release
// fixtures make an update that fails its health check.
//
//	GET  /                the page
//	GET  /count           the counter, as text; ?inc=1 increments it first
//	POST /count           increments the counter, then back to the page
//	GET  /healthz         200 "ok" (500 when broken)
//	GET  /api/info        {"version", "counter", "uid", "gid", "broken"}
//	PUT  /files/{name}    a file into its file store (files/), GET reads it
//	POST /history         a line appended to history/log
//	POST /bulk?mib=N      bulk/ replaced by N MiB of incompressible data
//	GET  /bulk            {"files", "bytes", "sha256"} of bulk/; DELETE empties it
//
// It listens on $PORT (default 8080) and refuses to run as root: the box
// runs it as an unprivileged user.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Set by the linker.
var (
	version = "dev"
	broken  = ""
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("demo: ")
	if os.Geteuid() == 0 {
		log.Fatal("refusing to run as root; run as an unprivileged user")
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	dir := os.Getenv("DATA_DIR")
	if dir == "" {
		dir = "."
	}
	app, err := newApp(dir, version, broken == "1")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Addr: ":" + port, Handler: app.handler(), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Printf("version %s listening on :%s, data in %s, counter %d", version, port, dir, app.count())
	select {
	case err := <-errc:
		log.Fatal(err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Print(err)
	}
	fmt.Fprintln(os.Stderr, "demo: stopped")
}
