require ["imap4flags", "fileinto"];
addflag "\\Seen";
addflag ["\\Flagged", "Work"];
removeflag "\\seen";
if hasflag :contains "work" { fileinto "has-work"; }
if hasflag :is "\\flagged" { fileinto :flags "\\Answered $Label1" "answered"; }
keep;
setflag "Final";
