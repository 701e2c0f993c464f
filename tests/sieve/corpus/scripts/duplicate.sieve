require ["duplicate", "fileinto", "mailbox", "variables", "imap4flags"];
if duplicate { fileinto :create "Trash/Duplicate"; }
if header :matches "subject" "*" {
  if duplicate :seconds 60 :uniqueid "${1}" { setflag "\\seen"; }
}
if duplicate :header "X-Event-ID" :handle "notifier" { discard; }
fileinto "Alerts";
