/* busctl apikey new: makes an API key for the HTTP edge. The secret is
 * printed once; the keys file (BUS_API_KEYS_FILE) stores only its SHA-256.
 *
 *   $ busctl apikey new --id raidbot --scopes 'rpc:alliances.*,events:alliance.*'
 *   secret: bus_raidbot_4f0c...   (give this to the client; it is not stored)
 *   line for the keys file:
 *   {"id":"raidbot","sha256":"9b1d...","scopes":["rpc:alliances.*","events:alliance.*"]}
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "bus/apikey.h"
#include "cli.h"

int bus_cli_apikey(int argc, char **argv) {
    const char *id = NULL, *scopes = NULL;
    if (argc < 1 || strcmp(argv[0], "new") != 0) {
        fprintf(stderr, "usage: busctl apikey new --id NAME --scopes SCOPE[,SCOPE...]\n");
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--id") == 0 && i + 1 < argc) id = argv[++i];
        else if (strcmp(argv[i], "--scopes") == 0 && i + 1 < argc) scopes = argv[++i];
        else {
            fprintf(stderr, "busctl apikey: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (!id || !scopes || !*scopes) {
        fprintf(stderr, "usage: busctl apikey new --id NAME --scopes SCOPE[,SCOPE...]\n");
        return 2;
    }
    char secret[160], line[2048], err[256];
    if (bus_apikey_generate(id, scopes, secret, sizeof secret, line, sizeof line, err, sizeof err) != 0) {
        fprintf(stderr, "busctl apikey: %s\n", err);
        return 2;
    }
    printf("secret: %s\n", secret);
    printf("line for the keys file (BUS_API_KEYS_FILE, one JSON object per line):\n%s\n", line);
    return 0;
}
