require ["imap4flags"];
setflag "\\Flagged";
if header :contains "subject" "money" { addflag "Junk"; }
