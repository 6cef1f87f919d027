/* The alliance rank rules as pure functions: no I/O, no allocation, no
 * global state, so tests/unit/test_alliance_rules.c checks every rule in
 * isolation and the RPC handlers (methods.c) only load, ask and write.
 *
 * Ranks are numbers 1..5 (R1 member ... R4 officer, R5 leader); 0 means
 * "no rank / unknown". Every check returns 0 when the action is allowed, or
 * BUS_EPERMISSION with a sentence in why[whylen] that names the rule broken
 * ("rule: only R4 and R5 may change ranks (the actor is R3)"). `why` may be
 * NULL when the caller does not need the sentence.
 */
#ifndef AL_RULES_H
#define AL_RULES_H

#include <stddef.h>
#include <stdint.h>

#define AL_RANK_MIN 1
#define AL_RANK_MAX 5 /* R5, the leader: exactly one per alliance */

/* "R1".."R5" -> 1..5; anything else (NULL, "r1", "R6", "R1 ") -> 0. */
int al_rank_parse(const char *s);
/* 1..5 -> "R1".."R5" (static storage); other values -> "?". */
const char *al_rank_name(int rank);

/* set_rank: the actor must be R4 or R5, must outrank the user, and may give
 * only a rank below their own; R5 is given only by transfer; nobody sets
 * their own rank. `self` is 1 when actor and user are the same person. */
int al_check_set_rank(int actor, int user, int new_rank, int self, char *why, size_t whylen);
/* kick: the actor must be R4 or R5 and outrank the user (so nobody kicks the
 * R5, and nobody kicks themselves). */
int al_check_kick(int actor, int user, int self, char *why, size_t whylen);
/* transfer: only the R5, and to another member. */
int al_check_transfer(int actor, int self, char *why, size_t whylen);
/* dissolve: only the R5. */
int al_check_dissolve(int actor, char *why, size_t whylen);

/* The succession order key of a member: smaller = comes first. Highest rank
 * first, then the lowest join sequence (the longest-standing member). The
 * store sorts members by this number (field "succ"), so "who succeeds" and
 * "how are members listed" are one index look-up. seq must be < 10^12. */
double al_succession_key(int rank, int64_t seq);
/* 1 when member a (rank, seq) succeeds before member b. */
int al_succeeds_before(int a_rank, int64_t a_seq, int b_rank, int64_t b_seq);

/* The case-insensitive uniqueness key of an alliance name: the name with
 * ASCII, Latin-1, Greek and Cyrillic capitals lowered (UTF-8 in, UTF-8 out;
 * other characters are copied as they are). Writes at most cap bytes
 * including the NUL; returns 0, or -1 when the key does not fit. */
int al_name_key(const char *name, char *out, size_t cap);

#endif
