package users

import (
	"errors"
	"net/http"
)

// Change changes name's password and says how it went as an HTTP status
// and a sentence, for the API and the web interface alike.
func (s *Store) Change(name, current, next string) (int, string) {
	return Answer(s.SetPassword(name, current, next))
}

// Answer turns a Store error into an HTTP status and a sentence that says
// what to do: 200 and "" for nil (and for ErrMirror: the change was made).
func Answer(err error) (int, string) {
	var pe *PolicyError
	switch {
	case err == nil, errors.Is(err, ErrMirror):
		return http.StatusOK, ""
	case errors.Is(err, ErrWrongPassword):
		return http.StatusForbidden, err.Error()
	case errors.Is(err, ErrInvalidPassword):
		return http.StatusBadRequest, "the new password cannot be used: " + reason(err)
	case errors.Is(err, ErrInvalidName), errors.As(err, &pe):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, ErrUnknownUser):
		return http.StatusNotFound, err.Error()
	case errors.Is(err, ErrUserExists):
		return http.StatusConflict, err.Error()
	case errors.Is(err, ErrLastAdmin):
		return http.StatusConflict, err.Error() + "; enable or add another account first"
	case errors.Is(err, ErrSelf), errors.Is(err, ErrRecoveryAccount):
		return http.StatusConflict, err.Error()
	default:
		return http.StatusInternalServerError, "the change could not be saved (" + err.Error() + "); try again, and check the data partition in the status if it repeats"
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
