/* kyso — internals shared by the HTTP server and client (server/http/). */
#ifndef KYSO_SERVER_HTTP_INTERNAL_H
#define KYSO_SERVER_HTTP_INTERNAL_H

/* 1 when the media type of a Content-Type value (what precedes any ';', with
 * surrounding blanks removed) equals want, ignoring case; 0 otherwise or for
 * NULL. */
int http__media_type_is(const char *value, const char *want);

#endif
