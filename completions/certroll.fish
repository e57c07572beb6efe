# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_certroll_global_optspecs
    string join \n plan= o/output= q/quiet v/verbose now= allow-time-travel key-file= lock-timeout= h/help V/version
end

function __fish_certroll_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_certroll_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_certroll_using_subcommand
    set -l cmd (__fish_certroll_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c certroll -n "__fish_certroll_needs_command" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_needs_command" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_needs_command" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_needs_command" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_needs_command" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_needs_command" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_needs_command" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_needs_command" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_needs_command" -s V -l version -d 'Print version'
complete -c certroll -n "__fish_certroll_needs_command" -f -a "init" -d 'Write a commented starter plan'
complete -c certroll -n "__fish_certroll_needs_command" -f -a "validate" -d 'Check a plan; touches nothing'
complete -c certroll -n "__fish_certroll_needs_command" -f -a "issue" -d 'Create whatever the plan declares and the state lacks'
complete -c certroll -n "__fish_certroll_needs_command" -f -a "roll-secondary" -d 'Expiry roll: a new certificate into the secondary slot; the primary keeps working'
complete -c certroll -n "__fish_certroll_needs_command" -f -a "roll-primary" -d 'Expiry roll: a new certificate into the primary slot; the secondary keeps working'
complete -c certroll -n "__fish_certroll_needs_command" -f -a "revoke" -d 'Disallow devices, enrollments or groups; put revoked serials on their CA\'s CRL'
complete -c certroll -n "__fish_certroll_needs_command" -f -a "reprovision" -d 'Make devices register again so the hub picks up the certificates they hold'
complete -c certroll -n "__fish_certroll_needs_command" -f -a "status" -d 'Show CAs, enrollments, slots, devices and hub identities'
complete -c certroll -n "__fish_certroll_needs_command" -f -a "export" -d 'Write a certificate with its chain (and key, if exportable) as PEM or PFX'
complete -c certroll -n "__fish_certroll_needs_command" -f -a "vault" -d 'The vault: certificates, versions, tags, soft delete, backup/restore, import, CSR/merge, contacts, issuers'
complete -c certroll -n "__fish_certroll_needs_command" -f -a "store" -d 'The local store itself: `rekey` re-seals every private key under a new store key'
complete -c certroll -n "__fish_certroll_needs_command" -f -a "check" -d 'For cron and monitoring: what is expired, what has an action due, what is next (exit 0/1/2/3)'
complete -c certroll -n "__fish_certroll_needs_command" -f -a "notify" -d 'Mail the contacts and run the hook about fired email-contacts actions and renewals'
complete -c certroll -n "__fish_certroll_needs_command" -f -a "serve" -d 'Serve the plan\'s local store as Azure Key Vault, DPS and IoT Hub over HTTPS (an emulator for SDKs, device clients and rehearsals)'
complete -c certroll -n "__fish_certroll_needs_command" -f -a "completions" -d 'Print shell completions'
complete -c certroll -n "__fish_certroll_needs_command" -f -a "man" -d 'Print the man page (roff), or write every page (one per verb too) into a folder'
complete -c certroll -n "__fish_certroll_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certroll -n "__fish_certroll_using_subcommand init" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand init" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand init" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand init" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand init" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand init" -l force -d 'Overwrite an existing plan file'
complete -c certroll -n "__fish_certroll_using_subcommand init" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand init" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand init" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand init" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand validate" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand validate" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand validate" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand validate" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand validate" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand validate" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand validate" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand validate" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand validate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand issue" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand issue" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand issue" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand issue" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand issue" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand issue" -l dry-run -d 'Print the steps; change nothing'
complete -c certroll -n "__fish_certroll_using_subcommand issue" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand issue" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand issue" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand issue" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand roll-secondary" -l incident -d 'With --breach: a label for the incident (a rerun with the same label does nothing)' -r
complete -c certroll -n "__fish_certroll_using_subcommand roll-secondary" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand roll-secondary" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand roll-secondary" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand roll-secondary" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand roll-secondary" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand roll-secondary" -l due -d 'Only what an auto-renew lifetime action says is due, into the slot with the older cert'
complete -c certroll -n "__fish_certroll_using_subcommand roll-secondary" -l breach -d 'The named slot\'s certificate (or CA) is compromised: remove it at once, revoke it, replace it'
complete -c certroll -n "__fish_certroll_using_subcommand roll-secondary" -l both -d 'With --breach: both slots are compromised'
complete -c certroll -n "__fish_certroll_using_subcommand roll-secondary" -l remove-hub-identity -d 'With --breach: delete the devices\' hub identities (they provision afresh) instead of re-provisioning them in place'
complete -c certroll -n "__fish_certroll_using_subcommand roll-secondary" -l dry-run -d 'Print the steps and the devices each cuts off; change nothing'
complete -c certroll -n "__fish_certroll_using_subcommand roll-secondary" -s y -l yes -d 'Do not ask for confirmation of a breach roll'
complete -c certroll -n "__fish_certroll_using_subcommand roll-secondary" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand roll-secondary" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand roll-secondary" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand roll-secondary" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand roll-primary" -l incident -d 'With --breach: a label for the incident (a rerun with the same label does nothing)' -r
complete -c certroll -n "__fish_certroll_using_subcommand roll-primary" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand roll-primary" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand roll-primary" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand roll-primary" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand roll-primary" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand roll-primary" -l due -d 'Only what an auto-renew lifetime action says is due, into the slot with the older cert'
complete -c certroll -n "__fish_certroll_using_subcommand roll-primary" -l breach -d 'The named slot\'s certificate (or CA) is compromised: remove it at once, revoke it, replace it'
complete -c certroll -n "__fish_certroll_using_subcommand roll-primary" -l both -d 'With --breach: both slots are compromised'
complete -c certroll -n "__fish_certroll_using_subcommand roll-primary" -l remove-hub-identity -d 'With --breach: delete the devices\' hub identities (they provision afresh) instead of re-provisioning them in place'
complete -c certroll -n "__fish_certroll_using_subcommand roll-primary" -l dry-run -d 'Print the steps and the devices each cuts off; change nothing'
complete -c certroll -n "__fish_certroll_using_subcommand roll-primary" -s y -l yes -d 'Do not ask for confirmation of a breach roll'
complete -c certroll -n "__fish_certroll_using_subcommand roll-primary" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand roll-primary" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand roll-primary" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand roll-primary" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand revoke" -l reason -d 'The RFC 5280 reason' -r -f -a "key-compromise\t'keyCompromise (1)'
ca-compromise\t'cACompromise (2)'
affiliation-changed\t'affiliationChanged (3)'
superseded\t'superseded (4)'
cessation-of-operation\t'cessationOfOperation (5)'
unspecified\t'unspecified (0)'"
complete -c certroll -n "__fish_certroll_using_subcommand revoke" -l hub-identity -d 'What happens to the hub identity of a revoked device' -r -f -a "disable\t'Disable it: the device cannot connect'
delete\t'Delete it'
keep\t'Leave it as it is'"
complete -c certroll -n "__fish_certroll_using_subcommand revoke" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand revoke" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand revoke" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand revoke" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand revoke" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand revoke" -s y -l yes -d 'Do not ask for confirmation'
complete -c certroll -n "__fish_certroll_using_subcommand revoke" -l dry-run -d 'Print the steps; change nothing'
complete -c certroll -n "__fish_certroll_using_subcommand revoke" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand revoke" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand revoke" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand revoke" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand reprovision" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand reprovision" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand reprovision" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand reprovision" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand reprovision" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand reprovision" -l dry-run -d 'Say which devices would be assigned and which refused; change nothing'
complete -c certroll -n "__fish_certroll_using_subcommand reprovision" -l force -d 'Register devices again even when already assigned with the certificate they hold'
complete -c certroll -n "__fish_certroll_using_subcommand reprovision" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand reprovision" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand reprovision" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand reprovision" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand status" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand status" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand status" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand status" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand status" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand status" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand status" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand status" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand export" -l format -d 'pem: certificate and chain (up to, not including, the root); pfx: key and full chain. Default: the policy\'s content_type (pem unless it is pfx); --with-key, or a key that may not leave the vault, means pem' -r -f -a "pem\t'The certificate, then its chain up to (not including) the root; with `--with-key`, the key'
pfx\t'PKCS#12 with key and chain (AES-256, HMAC-SHA256)'"
complete -c certroll -n "__fish_certroll_using_subcommand export" -l out -d 'The file to write (created 0600 when it holds a key)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand export" -l password-env -d 'The environment variable holding the PFX password' -r
complete -c certroll -n "__fish_certroll_using_subcommand export" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand export" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand export" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand export" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand export" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand export" -l with-key -d 'Add the private key to a PEM export (refused for non-exportable keys)'
complete -c certroll -n "__fish_certroll_using_subcommand export" -l crl -d 'Write the CRL of a CA (ca:NAME) instead of its certificate'
complete -c certroll -n "__fish_certroll_using_subcommand export" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand export" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand export" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand export" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -f -a "list" -d 'Every certificate with its current version and tags, then the requests waiting for a merge'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -f -a "show" -d 'A certificate: versions (oldest first) with attributes and tags, policy, key operations, and a request waiting for a merge'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -f -a "update" -d 'Enable or disable a version; set or remove tags'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -f -a "delete" -d 'Soft-delete a certificate with all its versions, policy and tags (recoverable until purged)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -f -a "list-deleted" -d 'Deleted certificates, with their deletion and scheduled purge dates'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -f -a "recover" -d 'Bring a deleted certificate back, exactly as it was'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -f -a "purge" -d 'Remove a deleted certificate for good (asks on a terminal, needs --yes otherwise)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -f -a "backup" -d 'Write a certificate with all its versions, keys, policy and tags to one encrypted file (0600)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -f -a "restore" -d 'Restore a backup: every version byte for byte, under its name, which must be free'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -f -a "contacts" -d 'The vault\'s contacts (e-mailed by EmailContacts lifetime actions)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -f -a "issuers" -d 'Issuer objects a policy can name besides Self and Unknown'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -f -a "import" -d 'Import a certificate with its private key from PEM or PKCS#12'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -f -a "create" -d 'Create a certificate: self-signed at once (--issuer Self), or a key and CSR that wait for an outside CA (--issuer Unknown or a set issuer) and `vault merge`'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -f -a "export" -d 'Write one version of any vault certificate as PEM (optionally with its key) or PFX'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -f -a "csr" -d 'Write the CSR of a request waiting for an outside CA (PEM)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -f -a "merge" -d 'Make the signed certificate of a waiting request a version (its public key must match)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and not __fish_seen_subcommand_from list show update delete list-deleted recover purge backup restore contacts issuers import create export csr merge help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from list" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from list" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from list" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from list" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from list" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from list" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from show" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from show" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from show" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from show" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from show" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from show" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from show" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from show" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from update" -l version -d 'The version (default: the current one)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from update" -l tag -d 'Set a tag (repeatable; at most 15 tags)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from update" -l untag -d 'Remove a tag (repeatable)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from update" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from update" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from update" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from update" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from update" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from update" -l enable -d 'Enable the version'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from update" -l disable -d 'Disable the version: it is then neither exported nor used to sign'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from update" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from update" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from update" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from update" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from delete" -l recovery-days -d 'Days it stays recoverable (7 to 90)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from delete" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from delete" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from delete" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from delete" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from delete" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from delete" -l force -d 'Delete even what devices hold or what signed other certificates'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from delete" -l dry-run -d 'Check and print what would be deleted; change nothing'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from delete" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from delete" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from delete" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from list-deleted" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from list-deleted" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from list-deleted" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from list-deleted" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from list-deleted" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from list-deleted" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from list-deleted" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from list-deleted" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from list-deleted" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from recover" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from recover" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from recover" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from recover" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from recover" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from recover" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from recover" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from recover" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from recover" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from purge" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from purge" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from purge" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from purge" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from purge" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from purge" -s y -l yes -d 'Do not ask for confirmation'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from purge" -l dry-run -d 'Print what would be purged; change nothing'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from purge" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from purge" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from purge" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from purge" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from backup" -l out -d 'The backup file to write' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from backup" -l password-env -d 'The environment variable holding the backup password' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from backup" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from backup" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from backup" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from backup" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from backup" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from backup" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from backup" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from backup" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from backup" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from restore" -l in -d 'The backup file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from restore" -l password-env -d 'The environment variable holding the backup password' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from restore" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from restore" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from restore" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from restore" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from restore" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from restore" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from restore" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from restore" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from restore" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from contacts" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from contacts" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from contacts" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from contacts" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from contacts" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from contacts" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from contacts" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from contacts" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from contacts" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from contacts" -f -a "get" -d 'The contacts, and whether they come from the store or the plan'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from contacts" -f -a "set" -d 'Replace the contacts'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from contacts" -f -a "delete" -d 'Remove the stored contacts (the plan\'s apply again)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from contacts" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from issuers" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from issuers" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from issuers" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from issuers" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from issuers" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from issuers" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from issuers" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from issuers" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from issuers" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from issuers" -f -a "set" -d 'Create or replace an issuer'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from issuers" -f -a "get" -d 'One issuer'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from issuers" -f -a "list" -d 'Every issuer'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from issuers" -f -a "delete" -d 'Delete an issuer (refused while a policy names it)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from issuers" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from import" -l file -d 'The PEM or PKCS#12 file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from import" -l password-env -d 'The environment variable holding the PKCS#12 password' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from import" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from import" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from import" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from import" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from import" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from import" -l hsm -d 'Keep the key as an HSM key: never exportable, by any path'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from import" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from import" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from import" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from import" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from create" -l subject -d 'The subject, e.g. "CN=web-2, O=Example"' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from create" -l key-type -d 'Key type' -r -f -a "RSA\t'RSA (--key-size)'
RSA-HSM\t'RSA in the (emulated) HSM: never exportable'
EC\t'ECDSA (--curve)'
EC-HSM\t'ECDSA in the (emulated) HSM: never exportable'"
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from create" -l key-size -d 'RSA modulus size: 2048 (default), 3072 or 4096. Only for RSA key types' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from create" -l curve -d 'EC curve: P-256 (default), P-384 or P-521. Only for EC key types' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from create" -l dns -d 'A DNS name or IP address for the subjectAltName (repeatable)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from create" -l key-usage -d 'Key usage (repeatable; default digitalSignature, with keyEncipherment for RSA keys)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from create" -l eku -d 'Extended key usage, a name or dotted OID (repeatable)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from create" -l validity-days -d 'Validity in days (1 to 36500)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from create" -l issuer -d 'Self, Unknown, or a set issuer\'s name' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from create" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from create" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from create" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from create" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from create" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from create" -l not-exportable -d 'Keep the key in the vault for good (also implied by an -HSM key type)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from create" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from create" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from create" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from export" -l version -d 'The version (default: the current one)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from export" -l format -d 'pem or pfx (default: the policy\'s content type, PEM unless it is application/x-pkcs12; --with-key, or a key that may not leave the vault, means PEM)' -r -f -a "pem\t'The certificate, then its chain up to (not including) the root; with `--with-key`, the key'
pfx\t'PKCS#12 with key and chain (AES-256, HMAC-SHA256)'"
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from export" -l out -d 'The file to write (created 0600 when it holds a key)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from export" -l password-env -d 'The environment variable holding the PFX password' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from export" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from export" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from export" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from export" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from export" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from export" -l with-key -d 'Add the private key to a PEM export'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from export" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from export" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from export" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from export" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from csr" -l out -d 'The file to write' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from csr" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from csr" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from csr" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from csr" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from csr" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from csr" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from csr" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from csr" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from csr" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from merge" -l file -d 'The signed certificate: PEM or DER, or a PKCS#7 bundle (.p7b, PEM or DER) as CAs hand back; the bundle\'s other certificates are kept as its chain' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from merge" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from merge" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from merge" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from merge" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from merge" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from merge" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from merge" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from merge" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from merge" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from help" -f -a "list" -d 'Every certificate with its current version and tags, then the requests waiting for a merge'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from help" -f -a "show" -d 'A certificate: versions (oldest first) with attributes and tags, policy, key operations, and a request waiting for a merge'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from help" -f -a "update" -d 'Enable or disable a version; set or remove tags'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Soft-delete a certificate with all its versions, policy and tags (recoverable until purged)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from help" -f -a "list-deleted" -d 'Deleted certificates, with their deletion and scheduled purge dates'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from help" -f -a "recover" -d 'Bring a deleted certificate back, exactly as it was'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from help" -f -a "purge" -d 'Remove a deleted certificate for good (asks on a terminal, needs --yes otherwise)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from help" -f -a "backup" -d 'Write a certificate with all its versions, keys, policy and tags to one encrypted file (0600)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from help" -f -a "restore" -d 'Restore a backup: every version byte for byte, under its name, which must be free'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from help" -f -a "contacts" -d 'The vault\'s contacts (e-mailed by EmailContacts lifetime actions)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from help" -f -a "issuers" -d 'Issuer objects a policy can name besides Self and Unknown'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from help" -f -a "import" -d 'Import a certificate with its private key from PEM or PKCS#12'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from help" -f -a "create" -d 'Create a certificate: self-signed at once (--issuer Self), or a key and CSR that wait for an outside CA (--issuer Unknown or a set issuer) and `vault merge`'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from help" -f -a "export" -d 'Write one version of any vault certificate as PEM (optionally with its key) or PFX'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from help" -f -a "csr" -d 'Write the CSR of a request waiting for an outside CA (PEM)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from help" -f -a "merge" -d 'Make the signed certificate of a waiting request a version (its public key must match)'
complete -c certroll -n "__fish_certroll_using_subcommand vault; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certroll -n "__fish_certroll_using_subcommand store; and not __fish_seen_subcommand_from rekey help" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand store; and not __fish_seen_subcommand_from rekey help" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand store; and not __fish_seen_subcommand_from rekey help" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand store; and not __fish_seen_subcommand_from rekey help" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand store; and not __fish_seen_subcommand_from rekey help" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand store; and not __fish_seen_subcommand_from rekey help" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand store; and not __fish_seen_subcommand_from rekey help" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand store; and not __fish_seen_subcommand_from rekey help" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand store; and not __fish_seen_subcommand_from rekey help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand store; and not __fish_seen_subcommand_from rekey help" -f -a "rekey" -d 'Re-seal every private key in the store under a new store key, then replace the key file'
complete -c certroll -n "__fish_certroll_using_subcommand store; and not __fish_seen_subcommand_from rekey help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certroll -n "__fish_certroll_using_subcommand store; and __fish_seen_subcommand_from rekey" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand store; and __fish_seen_subcommand_from rekey" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand store; and __fish_seen_subcommand_from rekey" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand store; and __fish_seen_subcommand_from rekey" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand store; and __fish_seen_subcommand_from rekey" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand store; and __fish_seen_subcommand_from rekey" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand store; and __fish_seen_subcommand_from rekey" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand store; and __fish_seen_subcommand_from rekey" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand store; and __fish_seen_subcommand_from rekey" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand store; and __fish_seen_subcommand_from help" -f -a "rekey" -d 'Re-seal every private key in the store under a new store key, then replace the key file'
complete -c certroll -n "__fish_certroll_using_subcommand store; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certroll -n "__fish_certroll_using_subcommand check" -l warn-within -d 'Warn about certificates expiring within this many days, 0 to 36500 (0 = only lifetime actions warn)' -r
complete -c certroll -n "__fish_certroll_using_subcommand check" -l critical-within -d 'Critical for certificates expiring within this many days, 0 to 36500 (0 = only expired ones)' -r
complete -c certroll -n "__fish_certroll_using_subcommand check" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand check" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand check" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand check" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand check" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand check" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand check" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand check" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand notify" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand notify" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand notify" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand notify" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand notify" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand notify" -l dry-run -d 'List what would be queued and sent; record and send nothing'
complete -c certroll -n "__fish_certroll_using_subcommand notify" -l refresh -d 'On backend kind azure: read every certificate\'s policy from Key Vault again, not only those whose newest version changed (picks up a policy changed outside certroll)'
complete -c certroll -n "__fish_certroll_using_subcommand notify" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand notify" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand notify" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand notify" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand serve" -l listen -d 'The address of the listener that routes by Host name: IP:PORT, the port 0 to 65535 (0: any free port)' -r
complete -c certroll -n "__fish_certroll_using_subcommand serve" -l ca-out -d 'Write the emulator CA\'s certificate (PEM) to FILE, for clients to trust (`-`: standard output; the start lines then go to standard error)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand serve" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand serve" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand serve" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand serve" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand serve" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand serve" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand serve" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand serve" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand completions" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand completions" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand completions" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand completions" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand completions" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand completions" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand completions" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand completions" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand man" -l dir -d 'Write certroll.1 and one page per verb (certroll-issue.1, certroll-vault-list.1, ...) into this existing folder instead of printing certroll.1, e.g. `certroll man --dir /usr/local/share/man/man1`' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand man" -l plan -d 'The plan file' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand man" -s o -l output -d 'Output format' -r -f -a "human\t'Readable text'
json\t'One JSON document'"
complete -c certroll -n "__fish_certroll_using_subcommand man" -l now -d 'Decide everything as if it were this RFC 3339 time (for tests and rehearsals)' -r
complete -c certroll -n "__fish_certroll_using_subcommand man" -l key-file -d 'The store key file (default: the store path with `.key` appended)' -r -F
complete -c certroll -n "__fish_certroll_using_subcommand man" -l lock-timeout -d 'Seconds to wait for another certroll writing to the same store (0 to 86400)' -r
complete -c certroll -n "__fish_certroll_using_subcommand man" -s q -l quiet -d 'Print only errors (and no progress bar)'
complete -c certroll -n "__fish_certroll_using_subcommand man" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c certroll -n "__fish_certroll_using_subcommand man" -l allow-time-travel -d 'Let a verb that writes run with --now more than 5 minutes ahead of or a day behind the real clock (a rehearsal on a copy of the store): certificates made then are not valid now'
complete -c certroll -n "__fish_certroll_using_subcommand man" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c certroll -n "__fish_certroll_using_subcommand help; and not __fish_seen_subcommand_from init validate issue roll-secondary roll-primary revoke reprovision status export vault store check notify serve completions man help" -f -a "init" -d 'Write a commented starter plan'
complete -c certroll -n "__fish_certroll_using_subcommand help; and not __fish_seen_subcommand_from init validate issue roll-secondary roll-primary revoke reprovision status export vault store check notify serve completions man help" -f -a "validate" -d 'Check a plan; touches nothing'
complete -c certroll -n "__fish_certroll_using_subcommand help; and not __fish_seen_subcommand_from init validate issue roll-secondary roll-primary revoke reprovision status export vault store check notify serve completions man help" -f -a "issue" -d 'Create whatever the plan declares and the state lacks'
complete -c certroll -n "__fish_certroll_using_subcommand help; and not __fish_seen_subcommand_from init validate issue roll-secondary roll-primary revoke reprovision status export vault store check notify serve completions man help" -f -a "roll-secondary" -d 'Expiry roll: a new certificate into the secondary slot; the primary keeps working'
complete -c certroll -n "__fish_certroll_using_subcommand help; and not __fish_seen_subcommand_from init validate issue roll-secondary roll-primary revoke reprovision status export vault store check notify serve completions man help" -f -a "roll-primary" -d 'Expiry roll: a new certificate into the primary slot; the secondary keeps working'
complete -c certroll -n "__fish_certroll_using_subcommand help; and not __fish_seen_subcommand_from init validate issue roll-secondary roll-primary revoke reprovision status export vault store check notify serve completions man help" -f -a "revoke" -d 'Disallow devices, enrollments or groups; put revoked serials on their CA\'s CRL'
complete -c certroll -n "__fish_certroll_using_subcommand help; and not __fish_seen_subcommand_from init validate issue roll-secondary roll-primary revoke reprovision status export vault store check notify serve completions man help" -f -a "reprovision" -d 'Make devices register again so the hub picks up the certificates they hold'
complete -c certroll -n "__fish_certroll_using_subcommand help; and not __fish_seen_subcommand_from init validate issue roll-secondary roll-primary revoke reprovision status export vault store check notify serve completions man help" -f -a "status" -d 'Show CAs, enrollments, slots, devices and hub identities'
complete -c certroll -n "__fish_certroll_using_subcommand help; and not __fish_seen_subcommand_from init validate issue roll-secondary roll-primary revoke reprovision status export vault store check notify serve completions man help" -f -a "export" -d 'Write a certificate with its chain (and key, if exportable) as PEM or PFX'
complete -c certroll -n "__fish_certroll_using_subcommand help; and not __fish_seen_subcommand_from init validate issue roll-secondary roll-primary revoke reprovision status export vault store check notify serve completions man help" -f -a "vault" -d 'The vault: certificates, versions, tags, soft delete, backup/restore, import, CSR/merge, contacts, issuers'
complete -c certroll -n "__fish_certroll_using_subcommand help; and not __fish_seen_subcommand_from init validate issue roll-secondary roll-primary revoke reprovision status export vault store check notify serve completions man help" -f -a "store" -d 'The local store itself: `rekey` re-seals every private key under a new store key'
complete -c certroll -n "__fish_certroll_using_subcommand help; and not __fish_seen_subcommand_from init validate issue roll-secondary roll-primary revoke reprovision status export vault store check notify serve completions man help" -f -a "check" -d 'For cron and monitoring: what is expired, what has an action due, what is next (exit 0/1/2/3)'
complete -c certroll -n "__fish_certroll_using_subcommand help; and not __fish_seen_subcommand_from init validate issue roll-secondary roll-primary revoke reprovision status export vault store check notify serve completions man help" -f -a "notify" -d 'Mail the contacts and run the hook about fired email-contacts actions and renewals'
complete -c certroll -n "__fish_certroll_using_subcommand help; and not __fish_seen_subcommand_from init validate issue roll-secondary roll-primary revoke reprovision status export vault store check notify serve completions man help" -f -a "serve" -d 'Serve the plan\'s local store as Azure Key Vault, DPS and IoT Hub over HTTPS (an emulator for SDKs, device clients and rehearsals)'
complete -c certroll -n "__fish_certroll_using_subcommand help; and not __fish_seen_subcommand_from init validate issue roll-secondary roll-primary revoke reprovision status export vault store check notify serve completions man help" -f -a "completions" -d 'Print shell completions'
complete -c certroll -n "__fish_certroll_using_subcommand help; and not __fish_seen_subcommand_from init validate issue roll-secondary roll-primary revoke reprovision status export vault store check notify serve completions man help" -f -a "man" -d 'Print the man page (roff), or write every page (one per verb too) into a folder'
complete -c certroll -n "__fish_certroll_using_subcommand help; and not __fish_seen_subcommand_from init validate issue roll-secondary roll-primary revoke reprovision status export vault store check notify serve completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c certroll -n "__fish_certroll_using_subcommand help; and __fish_seen_subcommand_from vault" -f -a "list" -d 'Every certificate with its current version and tags, then the requests waiting for a merge'
complete -c certroll -n "__fish_certroll_using_subcommand help; and __fish_seen_subcommand_from vault" -f -a "show" -d 'A certificate: versions (oldest first) with attributes and tags, policy, key operations, and a request waiting for a merge'
complete -c certroll -n "__fish_certroll_using_subcommand help; and __fish_seen_subcommand_from vault" -f -a "update" -d 'Enable or disable a version; set or remove tags'
complete -c certroll -n "__fish_certroll_using_subcommand help; and __fish_seen_subcommand_from vault" -f -a "delete" -d 'Soft-delete a certificate with all its versions, policy and tags (recoverable until purged)'
complete -c certroll -n "__fish_certroll_using_subcommand help; and __fish_seen_subcommand_from vault" -f -a "list-deleted" -d 'Deleted certificates, with their deletion and scheduled purge dates'
complete -c certroll -n "__fish_certroll_using_subcommand help; and __fish_seen_subcommand_from vault" -f -a "recover" -d 'Bring a deleted certificate back, exactly as it was'
complete -c certroll -n "__fish_certroll_using_subcommand help; and __fish_seen_subcommand_from vault" -f -a "purge" -d 'Remove a deleted certificate for good (asks on a terminal, needs --yes otherwise)'
complete -c certroll -n "__fish_certroll_using_subcommand help; and __fish_seen_subcommand_from vault" -f -a "backup" -d 'Write a certificate with all its versions, keys, policy and tags to one encrypted file (0600)'
complete -c certroll -n "__fish_certroll_using_subcommand help; and __fish_seen_subcommand_from vault" -f -a "restore" -d 'Restore a backup: every version byte for byte, under its name, which must be free'
complete -c certroll -n "__fish_certroll_using_subcommand help; and __fish_seen_subcommand_from vault" -f -a "contacts" -d 'The vault\'s contacts (e-mailed by EmailContacts lifetime actions)'
complete -c certroll -n "__fish_certroll_using_subcommand help; and __fish_seen_subcommand_from vault" -f -a "issuers" -d 'Issuer objects a policy can name besides Self and Unknown'
complete -c certroll -n "__fish_certroll_using_subcommand help; and __fish_seen_subcommand_from vault" -f -a "import" -d 'Import a certificate with its private key from PEM or PKCS#12'
complete -c certroll -n "__fish_certroll_using_subcommand help; and __fish_seen_subcommand_from vault" -f -a "create" -d 'Create a certificate: self-signed at once (--issuer Self), or a key and CSR that wait for an outside CA (--issuer Unknown or a set issuer) and `vault merge`'
complete -c certroll -n "__fish_certroll_using_subcommand help; and __fish_seen_subcommand_from vault" -f -a "export" -d 'Write one version of any vault certificate as PEM (optionally with its key) or PFX'
complete -c certroll -n "__fish_certroll_using_subcommand help; and __fish_seen_subcommand_from vault" -f -a "csr" -d 'Write the CSR of a request waiting for an outside CA (PEM)'
complete -c certroll -n "__fish_certroll_using_subcommand help; and __fish_seen_subcommand_from vault" -f -a "merge" -d 'Make the signed certificate of a waiting request a version (its public key must match)'
complete -c certroll -n "__fish_certroll_using_subcommand help; and __fish_seen_subcommand_from store" -f -a "rekey" -d 'Re-seal every private key in the store under a new store key, then replace the key file'
