/* The alliance rank rules (see rules.h). */
#include "rules.h"

#include <stdio.h>
#include <string.h>

#include "bus/error.h"

int al_rank_parse(const char *s) {
    if (!s || s[0] != 'R' || s[1] < '1' || s[1] > '5' || s[2] != '\0') return 0;
    return s[1] - '0';
}

const char *al_rank_name(int rank) {
    static const char *const names[] = {"?", "R1", "R2", "R3", "R4", "R5"};
    return rank >= AL_RANK_MIN && rank <= AL_RANK_MAX ? names[rank] : "?";
}

static int deny(char *why, size_t whylen, const char *fmt, int a, int b) {
    if (why && whylen) snprintf(why, whylen, fmt, al_rank_name(a), al_rank_name(b));
    return BUS_EPERMISSION;
}

/* The checks run in a fixed order so that the message names the first rule
 * a caller would have to fix: who may act at all, then who over whom, then
 * which rank. */
int al_check_set_rank(int actor, int user, int new_rank, int self, char *why, size_t whylen) {
    if (actor < 4) return deny(why, whylen, "rule: only R4 and R5 may change ranks (the actor is %s)%.0s", actor, 0);
    if (self) return deny(why, whylen, "rule: nobody may change their own rank (the actor is %s)%.0s", actor, 0);
    if (new_rank == AL_RANK_MAX)
        return deny(why, whylen, "rule: R5 is given only by transfer%.0s%.0s", actor, new_rank);
    if (user >= actor)
        return deny(why, whylen, "rule: the actor must outrank the user (actor %s, user %s)", actor, user);
    if (new_rank >= actor)
        return deny(why, whylen, "rule: the actor may only give a rank below their own (actor %s, rank %s asked)",
                    actor, new_rank);
    if (new_rank < AL_RANK_MIN) return deny(why, whylen, "rule: unknown rank%.0s%.0s", actor, new_rank);
    return 0;
}

int al_check_kick(int actor, int user, int self, char *why, size_t whylen) {
    if (actor < 4) return deny(why, whylen, "rule: only R4 and R5 may kick members (the actor is %s)%.0s", actor, 0);
    if (self) return deny(why, whylen, "rule: nobody may kick themselves; use leave (the actor is %s)%.0s", actor, 0);
    if (user >= actor)
        return deny(why, whylen, "rule: the actor must outrank the user (actor %s, user %s)", actor, user);
    return 0;
}

int al_check_transfer(int actor, int self, char *why, size_t whylen) {
    if (actor != AL_RANK_MAX)
        return deny(why, whylen, "rule: only the R5 may transfer leadership (the actor is %s)%.0s", actor, 0);
    if (self) return deny(why, whylen, "rule: leadership must go to another member%.0s%.0s", actor, 0);
    return 0;
}

int al_check_dissolve(int actor, char *why, size_t whylen) {
    if (actor != AL_RANK_MAX)
        return deny(why, whylen, "rule: only the R5 may dissolve the alliance (the actor is %s)%.0s", actor, 0);
    return 0;
}

double al_succession_key(int rank, int64_t seq) {
    if (rank < AL_RANK_MIN || rank > AL_RANK_MAX) rank = 0;
    return (double)(AL_RANK_MAX - rank) * 1e12 + (double)seq;
}

int al_succeeds_before(int a_rank, int64_t a_seq, int b_rank, int64_t b_seq) {
    if (a_rank != b_rank) return a_rank > b_rank;
    return a_seq < b_seq;
}

/* Lower-cases one code point of the scripts that have simple one-to-one
 * capitals in the two-byte UTF-8 range; anything else maps to itself. */
static unsigned lower_cp(unsigned c) {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;   /* Latin-1 */
    if (c >= 0x391 && c <= 0x3AB && c != 0x3A2) return c + 32; /* Greek */
    if (c >= 0x410 && c <= 0x42F) return c + 32;              /* Cyrillic А..Я */
    if (c >= 0x400 && c <= 0x40F) return c + 80;              /* Cyrillic Ѐ..Џ */
    return c;
}

int al_name_key(const char *name, char *out, size_t cap) {
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)name;
    while (*p) {
        unsigned char b[2];
        size_t n;
        if (p[0] < 0x80) {
            b[0] = (unsigned char)lower_cp(p[0]);
            n = 1;
            p += 1;
        } else if ((p[0] & 0xE0) == 0xC0 && (p[1] & 0xC0) == 0x80) {
            unsigned c = lower_cp(((unsigned)(p[0] & 0x1F) << 6) | (p[1] & 0x3F));
            b[0] = (unsigned char)(0xC0 | (c >> 6));
            b[1] = (unsigned char)(0x80 | (c & 0x3F));
            n = 2;
            p += 2;
        } else {
            if (o + 1 >= cap) return -1;
            out[o++] = (char)*p++;
            continue;
        }
        if (o + n >= cap) return -1;
        memcpy(out + o, b, n);
        o += n;
    }
    if (o >= cap) return -1;
    out[o] = '\0';
    return 0;
}
