2ºœdC{´_C˜ŽC%L7Ñ@-œ$cC533`C=ü©iCEmçéAMÉ–jCUÅðbCœ,ÀT"ŒÛP@d
%iöQ=