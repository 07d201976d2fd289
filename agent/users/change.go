package users

import (
	"errors"
	"net/http"
)

// Change changes name's password and says how it went as an HTTP status
// and a sentence, for the API and the web interface alike.
func (s *Store) Change(name, current, next string) (int, string) {
	err := s.SetPassword(name, current, next)
	switch {
	case err == nil, errors.Is(err, ErrMirror):
		return http.StatusOK, ""
	case errors.Is(err, ErrWrongPassword):
		return http.StatusForbidden, err.Error()
	case errors.Is(err, ErrInvalidPassword):
		return http.StatusBadRequest, "the new password cannot be used: " + reason(err)
	default:
		return http.StatusInternalServerError, "the password could not be saved (" + err.Error() + "); try again, and check the data partition in the status if it repeats"
	}
}

// reason is what follows "invalid password: " in a validation error.
func reason(err error) string {
	m := err.Error()
	if p := ErrInvalidPassword.Error() + ": "; len(m) > len(p) && m[:len(p)] == p {
		return m[len(p):]
	}
	return m
}
