require ["fileinto", "variables"];
if header :matches "List-ID" "*<*@*" {
    fileinto "INBOX.lists.${2}"; stop;
}
if header :matches "Subject" "[*] *" {
    fileinto "INBOX.lists.${1}"; stop;
}
if address :matches ["To", "Cc"] ["coyote@**.com", "ana@**.com"] {
    fileinto "INBOX.business.${2}"; stop;
}
if header :matches "subject" "*" { fileinto "subj-${1}"; }
