require ["fileinto", "mailbox"];
if mailboxexists "Existing" { fileinto "exists-yes"; }
if mailboxexists ["Existing", "Nope"] { fileinto "never"; }
fileinto :create "Trash/Duplicate";
