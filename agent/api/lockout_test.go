package api

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// An address that fails the threshold with many names is locked out for
// all of them, the right credentials too; other addresses are not; each
// failure and refusal is audited.
func TestLockoutPerAddressAndPerAccount(t *testing.T) {
	clock := newFakeClock()
	var audited []AuditEntry
	srv := New(Config{
		Verify: verify, Now: clock.Now, Sleep: clock.Sleep,
		Lockout: func() (int, time.Duration) { return 4, 10 * time.Minute },
		Audit:   func(e AuditEntry) { audited = append(audited, e) },
	})
	ctx := context.Background()
	for i := range 4 {
		call(srv, ctx, "192.0.2.7:1000", fmt.Sprintf("name-%d", i), "guess")
	}
	rec := call(srv, ctx, "192.0.2.7:1000", testUser, testPassword)
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "600" {
		t.Fatalf("a locked address: %d Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	if rec := call(srv, ctx, "192.0.2.8:1000", testUser, testPassword); rec.Code != http.StatusOK {
		t.Fatalf("another address: %d", rec.Code)
	}
	// Four failures on one account from four addresses lock the account.
	for i := range 4 {
		call(srv, ctx, fmt.Sprintf("198.51.100.%d:1000", i+1), "ops", "guess")
	}
	if rec := call(srv, ctx, "203.0.113.1:1000", "ops", "whatever"); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("a locked account: %d", rec.Code)
	}
	// The admin's workstation, where admin logged in before, is not
	// locked out of admin by guesses from elsewhere.
	for i := range 4 {
		call(srv, ctx, fmt.Sprintf("198.51.100.%d:1000", i+10), testUser, "guess")
	}
	if rec := call(srv, ctx, "203.0.113.2:1000", testUser, testPassword); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("admin from a new address while the account is locked: %d", rec.Code)
	}
	if rec := call(srv, ctx, "192.0.2.8:1000", testUser, testPassword); rec.Code != http.StatusOK {
		t.Fatalf("admin from the address admin logged in from: %d", rec.Code)
	}
	clock.Advance(10*time.Minute + time.Second)
	if rec := call(srv, ctx, "192.0.2.7:1000", testUser, testPassword); rec.Code != http.StatusOK {
		t.Fatalf("after the lockout: %d", rec.Code)
	}
	var failed, refused int
	for _, e := range audited {
		switch e.Outcome {
		case "failed: wrong user name or password":
			failed++
		case "refused: address locked", "refused: account locked":
			refused++
		}
	}
	if failed != 12 || refused != 3 {
		t.Fatalf("audited %d failures and %d refusals: %+v", failed, refused, audited)
	}
}
